"""The ``executions`` asset: kill switch verdicts, broker answers and fills for this bar's orders."""

import datetime as dt

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of
from assets.bars.logic import BarWindow
from assets.executions.stage import (
    execute,
    fresh_share,
    kept_record,
    not_sent,
    quotes_provider,
    refusal_frame,
)
from assets.pnl.stage import account_of
from dagster_project.partitions import bar_partitions
from resources.brokers.paper import BarClock
from resources.brokers.resource import BrokerResource
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.io_manager import load_recorded
from resources.lineage.resource import LineageResource
from resources.market.calendar import bar_key, get_calendar, parse_bar_key
from resources.market.clock import market_now


def live_refusal(bar: str) -> str | None:
    """Why a live run may not trade this bar (it is not the latest closed bar), or None."""
    now = market_now()
    latest = get_calendar().latest_closed_bar(now)
    if latest is None or bar_key(latest) != bar:
        return (f"refused: {bar} is not the live bar (market time {now:%Y-%m-%d %H:%M:%S}Z, latest closed bar "
                f"{bar_key(latest) if latest is not None else 'none'}); a past bar never reaches a broker")
    return None


def recorded_execution(lineage: LineageResource, bar: str) -> dict[str, pd.DataFrame] | None:
    """What a trading run recorded for ``bar`` (orders, fills, kill-switch events), or None."""
    store = lineage.store()
    if not store.path.exists():
        return None
    try:
        return kept_record(load_recorded(store, "executions", bar))
    except LookupError:
        return None


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="Per order: the kill switch's verdict (ACTIVE/REDUCING/HALTED checks), the broker's answer and "
                "the fills (price, quantity, fees). Audit sends nothing; replay only reaches the replay paper "
                "account; live only the live bar (a refused past bar keeps what it traded; the refusal goes to "
                "executions_refusals). Reruns never submit an order twice.",
)
def executions(context: AssetExecutionContext, sized_orders: pd.DataFrame, bars: BarWindow,
               features: pd.DataFrame, positions: dict[str, pd.DataFrame], broker: BrokerResource,
               kill_switch: KillSwitchResource, lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    bar = context.partition_key
    orders = sized_orders[sized_orders["has_order"]]
    refusal = "audit: no broker call is possible" if mode == "audit" else (
        live_refusal(bar) if mode == "live" else None)
    kept = None
    if refusal:
        context.log.warning(refusal)
        kept = recorded_execution(lineage, bar) if mode == "live" else None
        out = kept if kept is not None else not_sent(orders, refusal)
        now = market_now() if mode == "live" else dt.datetime.now(dt.UTC)
        out["executions_refusals"] = refusal_frame(now, mode, context.run.run_id, len(orders), refusal)
    else:
        bar_ts = parse_bar_key(bar).to_pydatetime()
        now = bar_ts if mode == "replay" else market_now().to_pydatetime()
        adapter = broker.get_broker_for(account_of(mode), quotes=quotes_provider(bars.snapshot, features),
                                        clock=BarClock(bar_ts))
        with _batched(adapter):
            out = execute(bar, bar_ts, now, sized_orders, positions, adapter, kill_switch.switch_for(account_of(mode)),
                          get_calendar().session_of(parse_bar_key(bar)), fresh_share(bars.snapshot))
    if kept is None:  # a kept record already names its account
        out["executions_fills"] = out["executions_fills"].assign(account=account_of(mode))
    e = out["executions"]
    context.add_output_metadata({
        "orders": len(e), "sent": int((e["status"] != "NOT_SENT").sum()), "fills": len(out["executions_fills"]),
        "denied": int((e["verdict"] == "DENY").sum()), "refusal": refusal or "", "mode": mode,
        "kill_switch_events": len(out["executions_killswitch"]), "kept_recorded": kept is not None,
    })
    return out


def _batched(adapter):
    from contextlib import nullcontext

    return adapter.batch() if hasattr(adapter, "batch") else nullcontext()
