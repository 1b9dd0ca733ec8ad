"""How the command line reaches the running platform's API: its address, and how its certificate is checked."""

from __future__ import annotations

import ssl

from infra.config import Settings


def api_base(settings: Settings) -> str:
    """The core's address, https:// when CDP_TLS_CERTFILE and CDP_TLS_KEYFILE are set."""
    return f"{settings.http_scheme}://{settings.http_host}:{settings.http_port}"


def api_verify(settings: Settings) -> ssl.SSLContext:
    """The system's CAs, and the configured certificate itself (a self-signed one); host names are checked."""
    context = ssl.create_default_context()
    if settings.uses_tls:
        context.load_verify_locations(settings.tls_certfile)
    return context
