"""The second witness of an armed kill switch, outside its state file (SPEC §9: STATE_MISSING).

Why two witnesses: a state file alone cannot tell a first start from a deleted file, and a switch that
reads "no file" as "fresh, ACTIVE" fails open. So when the file is missing, the switch asks:

* the lineage file: any kill-switch record of the account (``kill_switch_log``: init, trips, resets,
  session opens; ``executions_killswitch``: the checks of every traded bar);
* the broker (the truth): the account holds positions, has working orders, or has fills.

Any one of them means the switch was armed: HALTED / STATE_MISSING. A witness that cannot answer (a
locked lineage file, a broker error) counts as "armed" too: the question is only asked when the state is
already lost, and guessing "never armed" would fail open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from resources.brokers.protocol import Broker, BrokerError
from resources.lineage.store import LineageLocked, LineageStore

_TABLES = ("kill_switch_log", "executions_killswitch")


def lineage_evidence(store: LineageStore, account: str) -> str | None:
    """How many kill-switch records the lineage file holds for ``account`` (None: none, or no file)."""
    if not store.path.exists():
        return None
    try:
        with store.connect(read_only=True) as con:
            found = []
            for table in _TABLES:
                if not store.has_table(con, table):
                    continue
                cols = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
                where = "WHERE account = ?" if "account" in cols else ""
                n = con.execute(f"SELECT count(*) FROM {table} {where}", [account] if where else []).fetchone()[0]
                if n:
                    found.append(f"{n} row(s) in {table}")
    except LineageLocked as exc:
        return f"lineage file unreadable ({exc}): assumed armed"
    return f"lineage {store.path}: {', '.join(found)}" if found else None


def broker_evidence(broker: Broker) -> str | None:
    """Positions, working orders or fills at the broker (None: a blank account)."""
    try:
        positions, working = broker.positions(), broker.open_orders()
        fills = broker.fills_since(0) if not positions and not working else []
    except BrokerError as exc:
        return f"broker unreachable ({type(exc).__name__}: {exc}): assumed armed"
    parts = [f"{len(positions)} position(s)" if positions else "", f"{len(working)} working order(s)" if working
             else "", f"{len(fills)} fill(s)" if fills else ""]
    parts = [p for p in parts if p]
    return f"broker account holds {', '.join(parts)}" if parts else None


def armed_witness(account: str, lineage_db: str | Path | None = None,
                  broker: Callable[[], Broker] | None = None) -> Callable[[], str | None]:
    """The witness :class:`resources.kill_switch.logic.KillSwitch` asks when its state file is missing:
    the lineage file (``lineage_db``, default ``paths.lineage_db``) and the account's broker (default: the
    configured adapter for ``live``, the replay paper account for ``replay``)."""

    def witness() -> str | None:
        if broker is None:   # the adapter without Dagster: the kill-switch CLI stays fast (resources.brokers.venues)
            from resources.brokers.venues import broker_for

            adapter = broker_for(account)
        else:
            adapter = broker()
        found = [e for e in (lineage_evidence(LineageStore(lineage_db), account), broker_evidence(adapter)) if e]
        return "; ".join(found) or None

    return witness
