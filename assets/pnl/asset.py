"""The ``pnl`` asset: mark to market, realised/unrealised P&L, fees, estimated vs realised costs, slippage."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.execution_record import FILLS_TABLES, pnl_fills
from assets.pnl.stage import account_of, compute_pnl, est_costs, previous_book, start_of_bar
from assets.positions.stage import marks_from
from dagster_project.partitions import bar_partitions
from resources.lineage.resource import LineageResource
from resources.lineage.store import LineageStore
from resources.market.calendar import get_calendar, parse_bar_key


def recorded_previous(store: LineageStore, account: str, bar: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last recorded ``pnl`` row and ``pnl_book`` of the account before ``bar``."""
    if not store.path.exists():
        return pd.DataFrame(), pd.DataFrame()
    with store.connect(read_only=True) as con:
        if not store.has_table(con, "pnl"):
            return pd.DataFrame(), pd.DataFrame()
        row = con.execute("SELECT * FROM pnl WHERE account = ? AND bar < ? ORDER BY bar DESC LIMIT 1",
                          [account, bar]).df()
        if row.empty:
            return row, pd.DataFrame()
        book = store.read_partition("pnl_book", row["bar"].iloc[0], con, missing_ok=True)
        book = book[book["account"] == account] if len(book) else book
    return row, book


def recorded_fills(store: LineageStore, account: str, after: str, upto: str,
                   tables: tuple[str, ...] = FILLS_TABLES) -> pd.DataFrame:
    """The account's fills recorded at bars in (``after``, ``upto``] (``after`` = ``upto``: at that bar
    only), each ``fill_id`` once, in booking order."""
    lower = ">=" if after == upto else ">"
    with store.connect(read_only=True) as con:
        frames = [con.execute(f"SELECT * EXCLUDE (bar, _row) FROM {t} WHERE account = ? AND bar {lower} ? "
                              "AND bar <= ?", [account, after, upto]).df() for t in tables if store.has_table(con, t)]
    return pnl_fills(frames)


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="Per bar and account: portfolio value, cash, gross and net exposure, realised and unrealised "
                "P&L, fees, estimated vs realised costs, slippage vs the decision price, start-of-day equity and "
                "the daily return. Applies every fill recorded since the previous P&L bar; without a previous "
                "book it starts from the broker's cash, positions and cost basis.",
)
def pnl(context: AssetExecutionContext, executions: dict[str, pd.DataFrame], positions: dict[str, pd.DataFrame],
        bars: BarWindow, arbitrated_scores: dict[str, pd.DataFrame], lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    account = account_of(mode)
    bar = context.partition_key
    store = lineage.store()
    prev_row, prev_book = recorded_previous(store, account, bar)
    previous = previous_book(prev_row, prev_book)
    book, sod, session, fills, source = start_of_bar(
        previous, positions,
        recorded_fills(store, account, str(prev_row["bar"].iloc[0]), bar) if previous is not None else None,
        recorded_fills(store, account, bar, bar, ("executions_fills",)) if previous is None else None)
    _, out = compute_pnl(fills, marks_from(bars.snapshot), est_costs(arbitrated_scores["arbitrated_scores"]), book,
                         sod, session, get_calendar().session_of(parse_bar_key(bar)), account, source,
                         bars.adjustments)
    r = out["pnl"].iloc[0]
    context.add_output_metadata({**{k: float(r[k]) for k in ("portfolio_value", "cash", "gross_exposure",
                                                            "realised_pnl_cum", "unrealised_pnl", "fees_cum",
                                                            "daily_return", "slippage_bps")},
                                 "book_source": source, "fills": int(r["n_fills"])})
    return out
