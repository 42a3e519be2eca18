"""The Dagster instance config (``$DAGSTER_HOME/dagster.yaml``), written from CONFIG so no number is doubled.

Trading runs are serialised: the run queue admits ``orchestration.max_concurrent_trading_runs`` (1) at a
time, so orders and the single DuckDB writer never race.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from CONFIG.config_loader import PROJECT_ROOT, get_cfg


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / "var" / "dagster_home")


def write_instance_yaml(home: Path | None = None) -> Path:
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    cfg = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": get_cfg("orchestration.max_concurrent_trading_runs"),
                                       "dequeue_interval_seconds": 1}},
        "telemetry": {"enabled": False},
    }
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


if __name__ == "__main__":
    print(write_instance_yaml())
