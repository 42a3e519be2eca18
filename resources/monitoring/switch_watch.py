"""Kill-switch alerts whatever moved the switch: a bar, the CLI, a job, a corrupt state file.

A bar's transitions are alerted at once from its ``executions_killswitch`` events (with their reasons); every
other change (``tradegraph kill-switch trip/reset``, ``kill_switch_reset_job``, the pre-open re-base, a state
file that became unreadable) is noticed by a sensor polling the state file every ``alerts.poll_seconds``.
Both go through the *last alerted state* per account, kept in ``alerts.state_file``, so one change is
alerted once: the bar path stores the state it alerted, the poller alerts only a state it has not seen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Iterator

from CONFIG.config_loader import resolve_path
from resources.monitoring.alerts import Alert
from TRAINING.common.utils.file_utils import read_json, write_atomic_json


@contextlib.contextmanager
def _seen() -> Iterator[dict]:
    """The last alerted state per account, locked for read-modify-write; changes are written on exit."""
    path = resolve_path("alerts.state_file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            try:
                data = read_json(path) if path.exists() else {}
            except (OSError, ValueError):
                data = {}  # only the de-duplication is lost: the next change is alerted, possibly twice
            before = dict(data.get("kill_switch", {}))
            seen = dict(before)
            yield seen
            if seen != before:
                write_atomic_json(path, {**data, "kill_switch": seen})
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def note_state(account: str, state: str) -> None:
    """Remember that ``state`` was alerted for ``account`` (the bar path, after its transition alerts)."""
    with _seen() as seen:
        seen[account] = state


def poll(account: str, now: dt.datetime | None = None) -> list[Alert]:
    """Read the account's switch; an alert if its state differs from the last one alerted.

    The first look at a switch alerts only a state other than ACTIVE. Returns [] when nothing changed."""
    from resources.kill_switch.logic import KillSwitch
    from resources.kill_switch.resource import state_path_for

    result = KillSwitch(state_path_for(account)).status(now or dt.datetime.now(dt.UTC))
    state = result.trading_state.value
    with _seen() as seen:
        before = seen.get(account)
        if before == state:
            return []
        seen[account] = state
    if before is None and state == "ACTIVE":
        return []
    trips = "; ".join(f"{reason}: {trip.detail or trip.state.value}"
                      for reason, trip in sorted(result.state.trips.items()))
    severity = "failure" if state == "HALTED" else "info" if state == "ACTIVE" else "warning"
    title = f"{before or 'unknown'}->{state}"
    body = f"kill switch {title} (seen in its state file)" + (f"; active trips: {trips}" if trips else "")
    return [Alert("kill_switch", title, body, severity, account)]
