"""Every test runs against its own TRADEGRAPH_HOME (lineage DB, registry, broker, kill switch under tmp)."""

from __future__ import annotations

import pytest

from CONFIG.config_loader import reset_config


@pytest.fixture(autouse=True)
def tg_home(tmp_path, monkeypatch):
    home = tmp_path / "tg_home"
    home.mkdir()
    monkeypatch.setenv("TRADEGRAPH_HOME", str(home))
    for name in [n for n in __import__("os").environ if n.startswith("TRADEGRAPH__")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("TRADEGRAPH_CONFIG", raising=False)
    reset_config()
    yield home
    reset_config()
