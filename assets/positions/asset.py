"""The ``positions`` asset: the book before this bar's orders, from the broker, reconciled with the fills."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.pnl.stage import account_of
from assets.positions.stage import positions_from_broker, typed_book, window_marks
from dagster_project.partitions import bar_partitions
from resources.brokers.resource import BrokerResource
from resources.lineage.io_manager import load_recorded
from resources.lineage.resource import LineageResource


def recorded_fills(lineage: LineageResource, account: str, before_bar: str) -> pd.DataFrame:
    """Every fill the engine recorded for the account before this bar (its expected book)."""
    store = lineage.store()
    if not store.path.exists():
        return pd.DataFrame()
    with store.connect(read_only=True) as con:
        if not store.has_table(con, "executions_fills"):
            return pd.DataFrame()
        return con.execute("SELECT * EXCLUDE (bar, _row) FROM executions_fills WHERE account = ? AND bar < ? "
                           "ORDER BY seq, fill_id", [account, before_bar]).df()


def recorded_book(lineage: LineageResource, bar: str, account: str | None = None) -> dict[str, pd.DataFrame] | None:
    """The book recorded for ``bar`` (of ``account`` when given), or None when none was recorded.

    Why a bar's book is written once: it is the book *before* this bar's orders. A retry after a crash in
    ``executions`` (orders possibly already filled) or a rematerialized past bar would otherwise read the
    broker's book *after* them, size different orders, see its own fills as a reconciliation mismatch and
    overwrite the record of what the bar traded on.
    """
    store = lineage.store()
    if not store.path.exists():
        return None
    try:
        out = load_recorded(store, "positions", bar)
    except LookupError:
        return None
    if not isinstance(out, dict) or "positions_account" not in out or out["positions_account"].empty:
        return None
    if account is not None and not str(out["positions_account"]["source"].iloc[0]).endswith(f":{account}"):
        return None
    return typed_book(out)


def recorded_actions(lineage: LineageResource, account: str, before_bar: str) -> pd.DataFrame:
    """The corporate actions the account's broker applied at earlier bars (``positions_adjustments``)."""
    store = lineage.store()
    if not store.path.exists():
        return pd.DataFrame()
    with store.connect(read_only=True) as con:
        if not store.has_table(con, "positions_adjustments"):
            return pd.DataFrame()
        return con.execute("SELECT * EXCLUDE (bar, _row) FROM positions_adjustments WHERE account = ? AND bar < ? "
                           "ORDER BY bar, _row", [account, before_bar]).df()


def last_recorded_marks(lineage: LineageResource, account: str, bar: str) -> pd.Series:
    """The marks the account's P&L book last recorded before ``bar`` (the fallback of a held name that has no
    good row left in the window)."""
    from assets.pnl.asset import recorded_previous

    _, book = recorded_previous(lineage.store(), account, bar)
    if book is None or book.empty:
        return pd.Series(dtype=float)
    return pd.Series(book["mark"].to_numpy(dtype=float), index=book["symbol"].to_numpy(), dtype=float)


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="The book before this bar's orders: per symbol quantity, mark (the last good one, flagged stale, "
                "when the bar has none), weight; cash and portfolio value (broker = source of truth), reconciled "
                "against the fills the engine recorded; corporate actions applied on their effective date "
                "(positions_adjustments). In an audit the "
                "recorded book is used and no broker is asked; a bar whose book was already recorded for the "
                "account (a retry, a rematerialized past bar) keeps it.",
)
def positions(context: AssetExecutionContext, bars: BarWindow, broker: BrokerResource,
              lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    bar = context.partition_key
    if mode == "audit":
        out = typed_book(load_recorded(lineage.store(), "positions", bar))
    else:
        account = account_of(mode)
        out = recorded_book(lineage, bar, account)
        if out is not None:
            context.log.info(f"positions: the book recorded for {bar} ({account}) is kept, not re-read")
        else:
            out = positions_from_broker(broker.get_broker_for(account), bars.snapshot,
                                        recorded_fills(lineage, account, bar),
                                        source=f"{broker.adapter_name()}:{account}",
                                        marks=window_marks(bars, last_recorded_marks(lineage, account, bar)),
                                        actions=bars.adjustments,
                                        applied_before=recorded_actions(lineage, account, bar))
            out["positions_adjustments"] = out["positions_adjustments"].assign(account=account)
    acct = out["positions_account"].iloc[0]
    context.add_output_metadata({"portfolio_value": float(acct["portfolio_value"]), "cash": float(acct["cash"]),
                                 "stale_marks": int(acct.get("stale_marks", 0)),
                                 "gross_exposure": float(acct["gross_exposure"]),
                                 "held_symbols": int((out["positions"]["qty"] != 0).sum()),
                                 "reconciliation_mismatches": int(acct["n_mismatched"]), "mode": mode,
                                 "source": str(acct["source"])})
    return out
