"""The ``pnl`` asset: mark to market, realised/unrealised P&L, fees, estimated vs realised costs."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.pnl.stage import account_of, compute_pnl, est_costs, previous_book
from assets.positions.stage import marks_from
from CONFIG.config_loader import get_cfg
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


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="Per bar and account: portfolio value, cash, gross and net exposure, realised and unrealised "
                "P&L, fees, estimated vs realised costs, start-of-day equity and the daily return.",
)
def pnl(context: AssetExecutionContext, executions: dict[str, pd.DataFrame], bars: BarWindow,
        arbitrated_scores: dict[str, pd.DataFrame], lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    account = account_of(mode)
    prev_row, prev_book = recorded_previous(lineage.store(), account, context.partition_key)
    book, sod, session = previous_book(prev_row, prev_book, get_cfg("broker.initial_cash"))
    _, out = compute_pnl(executions["executions_fills"], marks_from(bars.snapshot),
                         est_costs(arbitrated_scores["arbitrated_scores"]), book, sod, session,
                         get_calendar().session_of(parse_bar_key(context.partition_key)), account, bars.adjustments)
    r = out["pnl"].iloc[0]
    context.add_output_metadata({k: float(r[k]) for k in ("portfolio_value", "cash", "gross_exposure",
                                                          "realised_pnl_cum", "unrealised_pnl", "fees_cum",
                                                          "daily_return")})
    return out
