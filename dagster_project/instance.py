"""The Dagster instance config (``$DAGSTER_HOME/dagster.yaml``), written from CONFIG so no number is doubled.

Trading runs are serialised: the run queue admits ``orchestration.max_concurrent_trading_runs`` (1) at a
time, so orders and the single DuckDB writer never race.

Storage (``instance.storage``): ``sqlite`` (default) keeps runs, events and schedules in files under
``$DAGSTER_HOME``; ``postgres`` puts them on a PostgreSQL server (``dagster-postgres``), so the webserver,
the daemon and run workers on other machines or containers share one instance (docs/deployment.md). The
server's URL is read by Dagster from the environment variable named by ``instance.postgres_url_env`` when
the instance loads: the file written here names the variable, never the password.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from CONFIG.config_loader import PROJECT_ROOT, ConfigError, get_cfg


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / "var" / "dagster_home")


def storage_config() -> dict:
    """The ``storage`` section for ``instance.storage``: none for SQLite (Dagster's default), or PostgreSQL
    with the URL from the environment (raises ``ConfigError`` naming the variable when it is unset)."""
    if get_cfg("instance.storage") == "sqlite":
        return {}
    env = get_cfg("instance.postgres_url_env")
    if not os.environ.get(env):
        raise ConfigError(f"instance.storage is postgres but ${env} is not set: export "
                          f"{env}=postgresql+psycopg2://user:password@host:5432/dagster")
    return {"storage": {"postgres": {"postgres_url": {"env": env}}}}


def write_instance_yaml(home: Path | None = None) -> Path:
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    cfg = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": get_cfg("orchestration.max_concurrent_trading_runs"),
                                       "dequeue_interval_seconds": 1}},
        "telemetry": {"enabled": False},
        **storage_config(),
    }
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


if __name__ == "__main__":
    try:
        print(write_instance_yaml())
    except ConfigError as exc:  # e.g. the Postgres profile without its URL: one line, exit 2
        print(f"dagster_project.instance: error: {exc}", file=sys.stderr)
        sys.exit(2)
