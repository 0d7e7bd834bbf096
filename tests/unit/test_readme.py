"""The README stays true: every setting in its table, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias.choices[0] if alias is not None else f"MFA_GATE_{field.upper()}"  # type: ignore[union-attr,return-value]


def test_every_setting_is_in_the_readme_table() -> None:
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.M))
    names = {_env_name(field) for field in Settings.model_fields}
    assert names - table == set(), "settings missing from the README table"
    assert table - names == set(), "README documents settings that do not exist"


def test_the_two_commands_exist() -> None:
    assert "bash scripts/demo" in README and "bash scripts/test" in README
    assert (ROOT / "scripts" / "demo").exists() and (ROOT / "scripts" / "test").exists()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
