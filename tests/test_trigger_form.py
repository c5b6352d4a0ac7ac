"""The manual DAG's trigger form explains itself: every field says what it does, its unit or choices, and its
range, in words (not only the `.env` key)."""

from __future__ import annotations

import re


def test_every_param_has_a_one_line_description_with_its_range():
    from daskweak.dagfactory import build_dag

    dag = build_dag("form_probe", nightly=False)
    for name, param in dag.params.items():
        description = param.description or ""
        assert "\n" not in description and len(description.split()) >= 8, (name, description)
        schema = param.schema
        if "minimum" in schema:  # a number: its range in words
            assert f"≥ {schema['minimum']}" in description, (name, description)
        for choice in schema.get("enum", []) + schema.get("items", {}).get("enum", []):
            assert choice in description, (name, choice, description)
        # the `.env` key, if named, comes last and in parentheses, never alone
        assert not re.fullmatch(r"[A-Z_]+( \(.*\))?", description), (name, description)
