"""How the platform's Kafka clients authenticate and encrypt: the kafka-python arguments of the settings.

Every kafka-python client the platform creates (the relay's admin client and
producer, the ingest topic's consumer) takes `kafka_client_options(settings)`
as keyword arguments; the Faust driver turns the same arguments into its
broker credentials (streams/faust_driver.py). With the bundled broker, and by
default, that is plain `security_protocol="PLAINTEXT"`.
"""

from __future__ import annotations

from typing import Any

from infra.config import Settings


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments: `security_protocol`, and the `ssl_*` / `sasl_*` ones that are set."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(settings, f"kafka_ssl_{name}")
        if path:
            options[f"ssl_{name}"] = path
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options
