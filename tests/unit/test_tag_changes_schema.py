"""The tag-changes schema is valid JSON and describes what the engine publishes (field names and enums)."""

import json
from pathlib import Path

from streams.tags import _CAUSE_RANK

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.tag-changes.schema.json").read_text())


def test_schema_names_every_field_and_cause() -> None:
    example = SCHEMA["examples"][0]
    assert set(SCHEMA["required"]) == set(SCHEMA["properties"]) == set(example)
    assert set(SCHEMA["properties"]["cause"]["enum"]) == set(_CAUSE_RANK)
    assert example["change"] in SCHEMA["properties"]["change"]["enum"]
