"""Every test runs against its own TRADEGRAPH_HOME (lineage DB, registry, broker, kill switch under tmp)."""

from __future__ import annotations

import pytest

from CONFIG.config_loader import reset_config


def arm_switches(*paths) -> None:
    """Arm kill switches (``init``): a never-armed switch denies every order (design: fails closed)."""
    import datetime as dt

    from resources.kill_switch.logic import KillSwitch
    from resources.kill_switch.resource import state_path_for

    for path in paths or (state_path_for("live"), state_path_for("replay")):
        KillSwitch(path).init(dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "test fixture")


@pytest.fixture(autouse=True)
def tg_home(tmp_path, monkeypatch):
    """A fresh TRADEGRAPH_HOME per test, with its live and replay kill switches armed by the fixture (a
    test of a never-armed switch deletes the state file)."""
    home = tmp_path / "tg_home"
    home.mkdir()
    monkeypatch.setenv("TRADEGRAPH_HOME", str(home))
    for name in [n for n in __import__("os").environ if n.startswith("TRADEGRAPH__")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("TRADEGRAPH_CONFIG", raising=False)
    reset_config()
    arm_switches()
    yield home
    reset_config()


@pytest.fixture(scope="session")
def small_registry_root(tmp_path_factory):
    """A real registry trained once per test session on a small slice of the embedded market."""
    from CONFIG.config_loader import reset_config
    from TRAINING.testing import train_small_registry

    reset_config()
    return train_small_registry(tmp_path_factory.mktemp("models"))


@pytest.fixture
def trained(small_registry_root, monkeypatch, tg_home):
    """Point this test's configuration at the session's small trained registry."""
    monkeypatch.setenv("TRADEGRAPH__PATHS__REGISTRY", str(small_registry_root))
    reset_config()
    return small_registry_root


@pytest.fixture
def live_clock(monkeypatch, tg_home):
    """An accelerated market clock the test can put just after any bar close: ``live_clock(bar_ts)``."""
    import pandas as pd

    from resources.market.clock import start_accelerated_clock

    monkeypatch.setenv("TRADEGRAPH__CLOCK__MODE", "accelerated")
    reset_config()

    def at(bar_ts, seconds_after: float = 1.0):
        start_accelerated_clock(pd.Timestamp(bar_ts) + pd.Timedelta(seconds=seconds_after), speed=1.0)

    return at
