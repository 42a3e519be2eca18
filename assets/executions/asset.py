"""The ``executions`` asset: kill switch verdicts, broker answers and fills for this bar's orders."""

import datetime as dt

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import authorize_live, mark_run_status, mode_of, set_outcome
from assets.bars.logic import BarWindow
from assets.executions.stage import bar_outcome, execute, fresh_share, looked_up, not_sent, refusal_frame
from assets.pnl.stage import account_of
from assets.sized_orders.stage import cancels_working_orders, session_phase
from assets.venue import live_refusal, quotes_provider
from dagster_project.partitions import bar_partitions
from resources.brokers.paper import BarClock
from resources.brokers.resource import BrokerResource
from resources.kill_switch.resource import KillSwitchResource
from resources.lineage.resource import LineageResource
from resources.market.calendar import get_calendar, parse_bar_key
from resources.market.clock import market_now


@dg.asset(
    partitions_def=bar_partitions,
    group_name="execution",
    io_manager_key="lineage_io",
    kinds={"duckdb"},
    description="Per order: the kill switch's verdict (state checks, max notional, gross after the bar's "
                "orders), the broker's answer, the order type and the decision price; fills a broker reports at "
                "once. Audit sends nothing; replay only reaches the replay paper account; live only the live bar "
                "(a refused past bar records what the broker says of its orders; the refusal goes to "
                "executions_refusals). Append-only: reruns never submit an order twice nor replace a record.",
    check_specs=[dg.AssetCheckSpec("reached_the_broker", asset="executions",
                                   description="what the bar amounted to (metadata outcome, also the run tag "
                                               "tradegraph/outcome): passes when traded or nothing to trade; fails "
                                               "(ERROR) when refused or when allowed orders met an error; WARN when "
                                               "halted by the kill switch or every order was denied")],
)
def executions(context: AssetExecutionContext, sized_orders: pd.DataFrame, bars: BarWindow,
               features: pd.DataFrame, positions: dict[str, pd.DataFrame], broker: BrokerResource,
               kill_switch: KillSwitchResource, lineage: LineageResource):
    mode = mode_of(context)
    bar = context.partition_key
    account = account_of(mode)
    orders = sized_orders[sized_orders["has_order"]]
    if mode == "live":
        authorize_live(context, lineage.store(), bar)  # a hand launch stops here: the switch is never asked
    refusal = "audit: no broker call is possible" if mode == "audit" else (
        live_refusal(bar) if mode == "live" else None)
    bar_ts = parse_bar_key(bar).to_pydatetime()
    if refusal:
        context.log.warning(refusal)
        if mode == "live":
            out = looked_up(orders, refusal, broker.get_broker_for(account), account, bar)
            mark_run_status(lineage.store(), context.run.run_id, bar, refusal)  # "refused: …"
        else:
            out = not_sent(orders, refusal, account, bar)
        now = market_now() if mode == "live" else dt.datetime.now(dt.UTC)
        out["executions_refusals"] = refusal_frame(now, mode, context.run.run_id, len(orders), refusal)
    else:
        now = bar_ts if mode == "replay" else market_now().to_pydatetime()
        adapter = broker.get_broker_for(account, quotes=quotes_provider(bars.snapshot, features),
                                        clock=BarClock(bar_ts))
        with _batched(adapter):
            out = execute(bar, bar_ts, now, sized_orders, positions, adapter, kill_switch.switch_for(account),
                          get_calendar().session_of(parse_bar_key(bar)), account,
                          session_open=session_phase(bar) != "closing", flatten=cancels_working_orders(bar),
                          fresh_share=fresh_share(bars.snapshot))
    e = out["executions"]
    state = None if refusal else kill_switch.switch_for(account).status(now).trading_state.value
    outcome, why = bar_outcome(bool(refusal), e, state)
    if mode != "audit":
        set_outcome(context, outcome)
    if mode == "live" and outcome == "error":
        mark_run_status(lineage.store(), context.run.run_id, bar, f"error: {why}")
    meta = {"orders": len(e), "sent": int((e["status"] != "NOT_SENT").sum()), "fills": len(out["executions_fills"]),
            "denied": int((e["verdict"] == "DENY").sum()), "refusal": refusal or "", "mode": mode,
            "kill_switch_events": len(out["executions_killswitch"]),
            "observe_only": session_phase(bar) == "closing", "outcome": outcome, "kill_switch_state": state or "",
            "venue": BrokerResource.venue() if account == "live" else "replay paper account (paths.replay_broker_db)"}
    yield dg.Output(out, metadata=meta)
    bad = mode == "live" and outcome not in ("traded", "nothing_to_trade")
    severity = (dg.AssetCheckSeverity.ERROR if outcome in ("refused", "error") else dg.AssetCheckSeverity.WARN)
    yield dg.AssetCheckResult(check_name="reached_the_broker", passed=not bad, severity=severity,
                              description=f"{outcome}: {refusal or why}",
                              metadata={"bar": bar, "outcome": outcome, "refusal": refusal or "", "why": why,
                                        "kill_switch_state": state or ""})


def _batched(adapter):
    from contextlib import nullcontext

    return adapter.batch() if hasattr(adapter, "batch") else nullcontext()
