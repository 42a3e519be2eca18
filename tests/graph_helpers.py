"""Helpers for tests that drive the real Dagster graph in process."""

from __future__ import annotations

import dagster as dg

from resources.launch_proof import signed_tags
from resources.lineage.io_manager import MODE_TAG
from resources.market.calendar import bar_key, get_calendar


def run_bar(bar: str, mode: str = "live", instance: dg.DagsterInstance | None = None, job: str = "trading_job",
            signed: bool = True, raise_on_error: bool = True, **tags: str):
    """Execute a job of the real ``Definitions`` for one bar partition, in process, as the engine does: a
    live run carries the launch proof the sensor would sign (``signed=False``: a launch by hand)."""
    from dagster_project.definitions import defs

    proof = signed_tags(bar) if signed and mode == "live" else {}
    return defs.resolve_job_def(job).execute_in_process(partition_key=bar, instance=instance,
                                                        tags={MODE_TAG: mode, **proof, **tags},
                                                        raise_on_error=raise_on_error)


def session_keys(session: str, n: int | None = None) -> list[str]:
    keys = [bar_key(t) for t in get_calendar().session_bars(session)]
    return keys[:n] if n else keys
