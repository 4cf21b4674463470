"""Every setting is documented in .env.example, and nothing undocumented is there."""

from __future__ import annotations

import re
from pathlib import Path

from hub.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {name.upper() for name in Settings.model_fields}
    assert documented == expected
    for name in expected:
        line_index = text.splitlines().index(
            next(line for line in text.splitlines() if re.match(rf"#\s*{name}=", line))
        )
        assert line_index > 0 and text.splitlines()[line_index - 1].startswith("#")


def test_settings_read_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HUB_INBOUND_SHARDS", "16")
    monkeypatch.setenv("HUB_DEFAULT_REGION", "pl")
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.hub_inbound_shards == 16
    assert settings.hub_default_region == "PL"
    assert settings.effective_database_url().endswith(f"{tmp_path}/hub.sqlite3")
