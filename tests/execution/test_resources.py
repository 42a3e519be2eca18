"""The broker and kill switch as Dagster resources, used by an asset in-process."""

from __future__ import annotations

from dagster import asset, materialize

from CONFIG.config_loader import reset_config
from resources.brokers.paper import PaperBroker
from resources.brokers.protocol import Broker, OrderRequest, OrderStatus, Side
from resources.brokers.resource import BrokerResource
from resources.kill_switch.logic import TradingState
from resources.kill_switch.resource import KillSwitchResource
from tests.execution.conftest import SESSION, T0, make_quotes


def test_broker_resource_builds_the_configured_adapter(configure, tmp_path, monkeypatch):
    b = BrokerResource().get_broker(quotes=make_quotes(), clock=lambda: T0)
    assert isinstance(b, PaperBroker) and isinstance(b, Broker)
    assert b.db_path == tmp_path / "paper.duckdb"
    monkeypatch.setenv("TRADEGRAPH__PATHS__PAPER_BROKER_DB", str(tmp_path / "other.duckdb"))  # the deployment's
    reset_config()
    assert BrokerResource().get_broker().db_path.name == "other.duckdb"


def test_resources_inside_an_asset(configure, tmp_path):
    @asset
    def executions(broker: BrokerResource, kill_switch: KillSwitchResource) -> dict:
        b = broker.get_broker(quotes=make_quotes(), clock=lambda: T0)
        orders = [OrderRequest("a1", "AAA", Side.BUY, 10, "bar")]
        check = kill_switch.pre_trade_check(orders, positions=b.positions(), prices={"AAA": 100.0},
                                            equity=b.account().equity, now=T0, bar_ts=T0, session_date=SESSION)
        allowed = set(check.allowed["client_order_id"])
        return {r.client_order_id: b.submit(r).status for r in orders if r.client_order_id in allowed}

    result = materialize([executions], resources={"broker": BrokerResource(),
                                                  "kill_switch": KillSwitchResource()})
    assert result.success and result.output_for_node("executions") == {"a1": OrderStatus.ACCEPTED}
    assert KillSwitchResource().status(T0).trading_state is TradingState.ACTIVE
    assert (tmp_path / "kill_switch.json").exists()
