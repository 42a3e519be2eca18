"""A run's recorded status is what happened (SPEC §7): ``running`` from its first step until its last step
has finished, then ``success``; ``failed: <step>`` when a step fails; ``refused: <why>`` when it sent
nothing on purpose; and ``failed: killed …`` when it was killed with no chance to write (kill -9, a lost
machine) — found by the next run.

Why the next run finds it: a process killed by SIGKILL runs no hook and no ``finally``. Every run records
its process (host, pid, the process's start time) when it starts; a later run looks at every ``running``
row of another run and marks it failed when its process is gone (or is another process with the same
pid), or when the Dagster instance says that run has finished. A run on another host is judged by the
instance only. No Dagster import: the caller passes the instance's view of a run as a callable.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from pathlib import Path

from resources.lineage.store import LineageStore

#: runs executing in this process (their own rows say ``running`` and they are alive)
ACTIVE_RUNS: set[str] = set()


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat, counted after the command name


def this_process() -> tuple[str, int, str]:
    return socket.gethostname(), os.getpid(), _proc_start(os.getpid())


def process_alive(pid: int, proc_start: str) -> bool:
    """The process with this pid runs and is the same process (same start time, when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _proc_start(pid)
    return not (proc_start and now and now != proc_start)


def record_process(store: LineageStore, con, run_id: str) -> None:
    host, pid, start = this_process()
    con.execute("INSERT OR REPLACE INTO runs_process VALUES (?, ?, ?, ?, ?)",
                [run_id, host, pid, start, dt.datetime.now(dt.UTC)])
    ACTIVE_RUNS.add(run_id)


def fail_dead_runs(store: LineageStore, con, run_id: str,
                   finished_elsewhere: Callable[[str], bool | None]) -> list[str]:
    """Mark every ``running`` row of another run whose process is gone as ``failed: killed …``; returns
    their run ids. ``finished_elsewhere(run_id)``: True when the orchestrator knows the run has finished
    (or does not know it at all), None when it cannot tell."""
    rows = con.execute("""SELECT DISTINCT r.run_id, p.host, p.pid, p.proc_start FROM runs r
                          LEFT JOIN runs_process p USING (run_id)
                          WHERE r.status = 'running' AND r.run_id <> ? ORDER BY 1""", [run_id]).fetchall()
    host, pid, start = this_process()
    dead = []
    for rid, r_host, r_pid, r_start in rows:  # runs left 'running': normally none
        if rid in ACTIVE_RUNS:
            continue
        if r_host == host and r_pid is not None:
            gone = (int(r_pid) == pid and r_start == start) or not process_alive(int(r_pid), r_start or "")
            why = f"its process {r_pid} on {r_host} is gone"
        else:
            gone = bool(finished_elsewhere(rid))
            why = "the orchestrator reports it finished or unknown"
        if gone:
            dead.append(rid)
            con.execute("UPDATE runs SET status = ?, ended_at = ? WHERE run_id = ? AND status = 'running'",
                        [f"failed: killed ({why}; found by run {run_id})", dt.datetime.now(dt.UTC), rid])
    return dead


def set_status(store: LineageStore, run_id: str, bar: str, status: str, *, only_if: tuple[str, ...] = (),
               **row: object) -> None:
    """Write this run's status (and any other ``runs`` columns given). ``only_if``: status prefixes the
    current status must start with for the write to happen (e.g. ``("running",)``)."""
    with store.connect() as con:
        current = con.execute("SELECT status FROM runs WHERE run_id = ? AND bar = ?", [run_id, bar]).fetchall()
        if only_if and current and not str(current[0][0] or "").startswith(only_if):
            return
        store.upsert_run(con, run_id=run_id, bar=bar, status=status, **row)
