"""The ``positions`` asset: the book before this bar's orders, from the broker, reconciled with the fills."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import authorize_live, mode_of
from assets.bars.logic import BarWindow
from assets.execution_record import LineageRecord
from assets.pnl.stage import account_of
from assets.positions.stage import positions_step, typed_book, window_marks
from assets.venue import live_refusal, quotes_provider
from dagster_project.partitions import bar_partitions
from resources.brokers.paper import BarClock
from resources.brokers.resource import BrokerResource
from resources.lineage.io_manager import load_recorded
from resources.lineage.resource import LineageResource
from resources.market.calendar import parse_bar_key


def recorded_book(lineage: LineageResource, bar: str, account: str | None = None) -> dict[str, pd.DataFrame] | None:
    """The book recorded for ``bar`` (of ``account`` when given), or None when none was recorded.

    Why a bar's book is written once: it is the book *before* this bar's orders. A retry after a crash in
    ``executions`` (orders possibly already sent) or a rematerialized past bar would otherwise read the
    broker's book *after* them, size different orders, see its own orders as pending and overwrite the
    record of what the bar traded on.
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
    description="The book before this bar's orders: corporate actions due applied at the paper venue "
                "(positions_adjustments), the venue settled at the bar (fills at its open, MOC and expiries at the "
                "close), the fills the broker reports for the engine's own orders taken in (settled / broker / "
                "recovered), the working orders' statuses, and the broker's book (source of truth) marked at the "
                "last good price (flagged stale when the bar has none) and reconciled against every recorded "
                "fill. In an audit the recorded book is used and no broker is asked; a bar whose book was "
                "already recorded for the account keeps it; a past bar in live mode moves nothing at the venue.",
)
def positions(context: AssetExecutionContext, bars: BarWindow, features: pd.DataFrame, broker: BrokerResource,
              lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    bar = context.partition_key
    if mode == "live":
        authorize_live(context, lineage.store(), bar)  # before any broker call (a no-op once checked)
    if mode == "audit":
        out = typed_book(load_recorded(lineage.store(), "positions", bar))
    else:
        account = account_of(mode)
        out = recorded_book(lineage, bar, account)
        if out is not None:
            context.log.info(f"positions: the book recorded for {bar} ({account}) is kept, not re-read")
        else:
            bar_ts = parse_bar_key(bar)
            live = mode == "replay" or live_refusal(bar) is None
            adapter = broker.get_broker_for(account, quotes=quotes_provider(bars.snapshot, features),
                                            clock=BarClock(bar_ts.to_pydatetime()))
            with _batched(adapter):
                out = positions_step(adapter, bar_ts, bars.snapshot, LineageRecord(lineage.store(), account, bar),
                                     account, f"{broker.adapter_name()}:{account}", settle=live, take_in=live,
                                     marks=window_marks(bars, last_recorded_marks(lineage, account, bar)),
                                     actions=bars.adjustments)
    acct = out["positions_account"].iloc[0]
    context.add_output_metadata({"portfolio_value": float(acct["portfolio_value"]), "cash": float(acct["cash"]),
                                 "stale_marks": int(acct.get("stale_marks", 0)),
                                 "gross_exposure": float(acct["gross_exposure"]),
                                 "held_symbols": int((out["positions"]["qty"] != 0).sum()),
                                 "reconciliation_mismatches": int(acct["n_mismatched"]), "mode": mode,
                                 "source": str(acct["source"]),
                                 "fills_taken_in": int(acct.get("fills_taken_in", 0)),
                                 "fills_recovered": int(acct.get("fills_recovered", 0))})
    return out


def _batched(adapter):
    from contextlib import nullcontext

    return adapter.batch() if hasattr(adapter, "batch") else nullcontext()
