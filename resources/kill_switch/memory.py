"""A kill switch whose state stays in memory between operations: the replay's, one process bar after bar.

Why: the file switch (:class:`KillSwitch`) locks, loads and atomically rewrites its state file on every
operation, so that every Dagster run (a new process) and an operator's CLI see one state; a replay calls it
twice a bar for thousands of bars in one process, where that file round trip was most of the switch's cost.

:class:`HeldKillSwitch` runs the same pure functions (``pre_trade_check``, ``record_broker_outcomes``,
``on_session_open``, ``trip``, ``reset``) on a state loaded once, with the file switch's failing-closed load
(missing with a witness → HALTED / STATE_MISSING, corrupt → HALTED / STATE_CORRUPT with the file kept as
``.corrupt``, never armed → NOT_ARMED and nothing kept), and writes it with ``write_atomic_json`` only when
:meth:`HeldKillSwitch.save` is called. After every operation the held state is passed through the state
file's JSON form, so it is exactly what the file switch would load at its next operation (non-finite
numbers become null, times UTC): both switches give the same verdicts and events, bit for bit.

What is not saved is lost with the process (the replay saves at each lineage flush, so the switch, the paper
account and lineage stay consistent after a crash: ``dagster_project.commands.replay``). An operator's trip
written to the file while a replay holds the state is not seen by that replay, but never lost: :meth:`save`
finds the file changed since it was loaded and keeps every trip of both (a person's reset meanwhile is not
taken: failing closed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace

from resources.kill_switch.logic import (
    CheckResult,
    KillSwitch,
    KillSwitchEvent,
    KillSwitchState,
    Limits,
    _with_trips,
    load_state,
    state_from_dict,
    state_to_dict,
)
from TRAINING.common.utils.file_utils import canonical_json, write_atomic_json

log = logging.getLogger(__name__)


def as_persisted(state: KillSwitchState) -> KillSwitchState:
    """``state`` as the file switch would read it back after writing it (its JSON form)."""
    return state_from_dict(json.loads(canonical_json(state_to_dict(state))))


class HeldKillSwitch(KillSwitch):
    """The kill switch of one long-lived process: loaded at its first operation, saved by :meth:`save`.
    Limits are read from the configuration once (at the first operation) unless given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._state: KillSwitchState | None = None   # None: not loaded yet, or never armed
        self._on_disk: bytes | None = None           # the file's bytes when loaded or last saved
        self._dirty = False

    @property
    def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.from_config()
        return self._limits

    def _read_bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _transact(self, now: dt.datetime, op: Callable[[KillSwitchState], CheckResult], *,
                  arms: bool = False) -> CheckResult:
        events: list[KillSwitchEvent] = []
        if self._state is None:
            with self._locked():
                state, events, how = load_state(self.path, now, self.witness)
                if how == "unarmed" and not arms:   # nothing kept: it stays unarmed, as on file
                    result = op(state)
                    return replace(result, events=[*events, *result.events])
                if how == "corrupt":
                    shutil.copyfile(self.path, self.path.with_name(self.path.name + ".corrupt"))
                if how == "unarmed":
                    state = replace(state, trips={})
                self._on_disk = self._read_bytes()
            self._state = state
        result = op(self._state)
        self._state, self._dirty = as_persisted(result.state), True
        return replace(result, events=[*events, *result.events])

    def is_armed(self) -> bool:
        return self._state is not None or super().is_armed()

    def status(self, now: dt.datetime) -> CheckResult:
        return CheckResult(self._state, []) if self._state is not None else super().status(now)

    def init(self, now: dt.datetime, reason: str = "first start") -> CheckResult:
        if self._state is not None:
            return CheckResult(self._state, [KillSwitchEvent(now, "init", None, None, "SKIP",
                                                             f"already armed ({self.path}, held in memory)")])
        return super().init(now, reason)

    def save(self) -> None:
        """Write the held state to the state file (``write_atomic_json``, under the file's lock) if an
        operation changed it. A file changed by someone else since the load keeps its trips too."""
        if self._state is None or not self._dirty:
            return
        with self._locked():
            current = self._read_bytes()
            state = self._state
            if current is not None and current != self._on_disk:
                try:
                    theirs = state_from_dict(json.loads(current))
                except (ValueError, KeyError, TypeError, AttributeError):
                    theirs = None
                if theirs is not None and set(theirs.trips) - set(state.trips):
                    state = as_persisted(_with_trips(state, list(theirs.trips.values())))
                log.warning("kill switch %s changed on disk while held in memory; saved with the trips of both "
                            "(%s)", self.path, ", ".join(state.trips) or "none")
            write_atomic_json(self.path, state_to_dict(state))
            self._on_disk = self._read_bytes()
        self._state, self._dirty = state, False
