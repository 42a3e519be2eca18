"""The ``positions`` asset: the book before this bar's orders, from the broker, reconciled with the fills."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.pnl.stage import account_of
from assets.positions.stage import positions_from_broker
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
        if not store._has_table(con, "executions_fills"):
            return pd.DataFrame()
        return con.execute("SELECT * EXCLUDE (bar, _row) FROM executions_fills WHERE account = ? AND bar < ? "
                           "ORDER BY seq, fill_id", [account, before_bar]).df()


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="The book before this bar's orders: per symbol quantity, mark, weight; cash and portfolio value "
                "(broker = source of truth), reconciled against the fills the engine recorded. In an audit the "
                "recorded book is used and no broker is asked.",
)
def positions(context: AssetExecutionContext, bars: BarWindow, broker: BrokerResource,
              lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    if mode == "audit":
        out = load_recorded(lineage.store(), "positions", context.partition_key)
    else:
        account = account_of(mode)
        adapter = broker.get_broker_for(account)
        out = positions_from_broker(adapter, bars.snapshot, recorded_fills(lineage, account, context.partition_key),
                                    source=f"{broker.adapter_name()}:{account}")
    acct = out["positions_account"].iloc[0]
    context.add_output_metadata({"portfolio_value": float(acct["portfolio_value"]), "cash": float(acct["cash"]),
                                 "gross_exposure": float(acct["gross_exposure"]),
                                 "held_symbols": int((out["positions"]["qty"] != 0).sum()),
                                 "reconciliation_mismatches": int(acct["n_mismatched"]), "mode": mode})
    return out
