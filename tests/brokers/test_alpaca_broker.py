"""The Alpaca adapter through alpaca-py against mocked HTTP: errors, rate limit, timeouts, order types,
the status mapping, the live-money switch and credentials that never leak."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from CONFIG.config_loader import use_config
from resources.brokers.alpaca.parsing import KNOWN_STATUSES, UnknownVenueStatus, map_status, parse_order
from resources.brokers.alpaca.transport import VenueAdapter, rate_limit_wait
from resources.brokers.protocol import (
    BrokerError,
    BrokerTimeout,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
)
from resources.brokers.resource import BrokerResource, forget_venues
from resources.brokers.submit import submit_with_lookup
from resources.credentials import CredentialsError
from tests.brokers.conftest import KEY_ID, SECRET
from tests.brokers.test_protocol_contract import buy

NOW = 1_750_000_000.0  # the harness's clock (unix seconds)


def test_every_alpaca_status_is_mapped_and_an_unknown_one_is_named():
    from alpaca.trading.enums import OrderStatus as AlpacaStatus

    assert {s.value for s in AlpacaStatus} == KNOWN_STATUSES
    with pytest.raises(UnknownVenueStatus, match="'teleported'"):
        map_status("teleported", 0, 10)


@pytest.mark.parametrize("status, filled, expected", [
    ("pending_new", 0, (OrderStatus.SUBMITTED, None)),
    ("accepted", 0, (OrderStatus.ACCEPTED, None)),
    ("new", 3, (OrderStatus.PARTIALLY_FILLED, None)),
    ("pending_cancel", 0, (OrderStatus.ACCEPTED, None)),
    ("partially_filled", 4, (OrderStatus.PARTIALLY_FILLED, None)),
    ("filled", 10, (OrderStatus.FILLED, None)),
    ("done_for_day", 4, (OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE)),
    ("calculated", 10, (OrderStatus.FILLED, None)),
    ("expired", 0, (OrderStatus.EXPIRED, RejectReason.EXPIRED_AT_CLOSE)),
    ("canceled", 2, (OrderStatus.CANCELLED, RejectReason.CANCELLED_BY_REQUEST)),
    ("replaced", 0, (OrderStatus.CANCELLED, None)),
    ("rejected", 0, (OrderStatus.REJECTED, RejectReason.BROKER_REJECTED)),
])
def test_status_mapping_table(status, filled, expected):
    assert map_status(status, filled, 10) == expected


def test_a_venue_status_change_is_read_back_through_the_client(alpaca):
    venue = alpaca.extra["venue"]
    alpaca.broker.submit(buy("s1"))
    for raw, ours in (("pending_new", OrderStatus.SUBMITTED), ("done_for_day", OrderStatus.EXPIRED),
                      ("expired", OrderStatus.EXPIRED)):
        venue.set_status("s1", raw)
        assert alpaca.broker.order_status("s1").status is ours
    venue.set_status("s1", "on_the_moon")
    with pytest.raises(UnknownVenueStatus, match="on_the_moon"):
        alpaca.broker.order_status("s1")


def test_order_json_in_alpacas_published_shape_parses():
    raw = {"id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "client_order_id": "abc", "symbol": "AAPL",
           "qty": "10", "filled_qty": "4", "filled_avg_price": "187.125", "type": "market", "side": "sell",
           "time_in_force": "cls", "status": "partially_filled", "submitted_at": "2021-03-16T18:38:01.937734123Z",
           "position_intent": "sell_to_close", "limit_price": None}
    o = parse_order(raw)
    assert (o.status, o.filled_quantity, o.avg_price, o.order_type, o.reduce_only, o.side) == (
        OrderStatus.PARTIALLY_FILLED, 4.0, 187.125, OrderType.MOC, True, Side.SELL)
    assert o.submitted_at.isoformat() == "2021-03-16T18:38:01.937734+00:00" and o.remaining == 6.0
    with pytest.raises(BrokerError, match="'qty'"):
        parse_order({**raw, "qty": None})
    with pytest.raises(UnknownVenueStatus, match="stop"):
        parse_order({**raw, "type": "stop"})


def test_order_types_go_out_as_alpaca_expects(alpaca):
    venue = alpaca.extra["venue"]
    b = alpaca.broker
    b.submit(buy("m", 2))
    b.submit(buy("l", 2, order_type=OrderType.LIMIT, limit_price=99.5))
    b.submit(buy("c", 2, order_type=OrderType.MOC))
    posts = {p["client_order_id"]: p for p in venue.calls("POST", r"/v2/orders$")}
    assert (posts["m"]["type"], posts["m"]["time_in_force"]) == ("market", "day")
    assert (posts["l"]["type"], posts["l"]["time_in_force"], posts["l"]["limit_price"]) == ("limit", "day", 99.5)
    assert (posts["c"]["type"], posts["c"]["time_in_force"]) == ("market", "cls")
    assert all("position_intent" not in p for p in posts.values())


def test_insufficient_buying_power_is_a_rejection_with_nothing_placed(alpaca):
    alpaca.extra["venue"].cash = 100.0
    r = alpaca.broker.submit(buy("big", 10))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.INSUFFICIENT_BUYING_POWER
    assert "403" in r.error and alpaca.broker.order_status("big") is None


def test_another_venue_refusal_is_broker_rejected_with_alpacas_words(alpaca):
    r = alpaca.broker.submit(buy("x", 1, symbol="NOPE"))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.BROKER_REJECTED
    assert "NOPE" in r.error and "not found" in r.error


def test_a_429_waits_for_the_window_named_by_the_headers_then_succeeds(alpaca):
    venue, sleeps = alpaca.extra["venue"], alpaca.extra["sleeps"]
    venue.fail_next("POST", r"/v2/orders$", 429, {"code": 42910000, "message": "rate limit exceeded"},
                    {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 7)})
    venue.fail_next("POST", r"/v2/orders$", 429, {"message": "rate limit exceeded"}, {"Retry-After": "2"})
    r = alpaca.broker.submit(buy("rl"))
    assert r.status is OrderStatus.ACCEPTED and sleeps == [7.0, 2.0]
    assert len(venue.calls("POST", r"/v2/orders$")) == 3 and len(venue.by_cid) == 1


def test_rate_limit_waits_are_bounded(alpaca):
    venue, sleeps = alpaca.extra["venue"], alpaca.extra["sleeps"]
    for _ in range(4):  # broker.alpaca.rate_limit_retries = 3: the 4th 429 is an error
        venue.fail_next("GET", r"/v2/positions$", 429, {"message": "rate limit exceeded"},
                        {"X-RateLimit-Reset": str(int(NOW) + 1)})
    with pytest.raises(BrokerError, match="429"):
        alpaca.broker.positions()
    assert sleeps == [1.0, 1.0, 1.0] and len(venue.calls("GET", r"/v2/positions$")) == 4
    sleeps.clear()
    venue.fail_next("GET", r"/v2/account$", 429, {"message": "rate limit exceeded"},
                    {"X-RateLimit-Reset": str(int(NOW) + 3600)})  # further than we may wait: no sleep, an error
    with pytest.raises(BrokerError, match="429"):
        alpaca.broker.account()
    assert sleeps == []


def test_rate_limit_wait_worked_by_hand():
    assert rate_limit_wait({"X-RateLimit-Reset": "1000"}, 993.5, 9.0) == 6.5
    assert rate_limit_wait({"retry-after": "4"}, 993.5, 9.0) == 4.0
    assert rate_limit_wait({"X-RateLimit-Reset": "900"}, 993.5, 9.0) == 0.0
    assert rate_limit_wait({}, 993.5, 0.25) == 0.25
    assert rate_limit_wait({"Retry-After": "Wed, 21 Oct 2015 07:28:05 GMT"}, 1445412480.0, 9.0) == 5.0


def test_a_read_answered_5xx_is_retried_with_back_off_a_submit_never(alpaca):
    venue, sleeps = alpaca.extra["venue"], alpaca.extra["sleeps"]
    venue.fail_next("GET", r"/v2/positions$", 503)
    venue.fail_next("GET", r"/v2/positions$", 502)
    assert alpaca.broker.positions() == {} and sleeps == [0.5, 1.0]
    venue.fail_next("POST", r"/v2/orders$", 500)
    r = submit_with_lookup(alpaca.broker, buy("five"))
    assert r.status is OrderStatus.REJECTED and r.reason_code is RejectReason.NOT_RECEIVED and "500" in r.error
    assert len(venue.calls("POST", r"/v2/orders$")) == 1 and not venue.by_cid


def test_a_submit_that_timed_out_after_reaching_alpaca_is_found_not_resent(alpaca):
    venue = alpaca.extra["venue"]
    venue.fail_next("POST", r"/v2/orders$", exception=requests.ReadTimeout, apply=True)
    with pytest.raises(BrokerTimeout):
        alpaca.broker.submit(buy("to"))
    r = submit_with_lookup(alpaca.broker, buy("to2"))
    assert r.status is OrderStatus.ACCEPTED
    venue.fail_next("POST", r"/v2/orders$", exception=requests.ReadTimeout, apply=True)
    r = submit_with_lookup(alpaca.broker, buy("to3"))
    assert r.status is OrderStatus.ACCEPTED and "BrokerTimeout" in r.error and r.broker_order_id
    assert [p["client_order_id"] for p in venue.calls("POST", r"/v2/orders$")] == ["to", "to2", "to3"]
    assert sorted(venue.by_cid) == ["to", "to2", "to3"]


def test_every_request_carries_the_configured_timeout(alpaca):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        from resources.brokers.alpaca.execution import AlpacaBroker
        from resources.credentials import AlpacaKeys
        from tests.brokers.alpaca_mock import AlpacaVenue

        AlpacaVenue(prices={"AAA": 1.0}).install(rsps)
        AlpacaBroker(AlpacaKeys(KEY_ID, SECRET)).positions()
        assert rsps.calls[0].request.req_kwargs["timeout"] == 2.0  # broker.submit_timeout_seconds (harness)


def test_credentials_never_reach_an_error_text_or_a_repr(alpaca):
    venue = alpaca.extra["venue"]
    venue.fail_next("GET", r"/v2/account$", 401, {"code": 40110000, "message": f"invalid key {KEY_ID}/{SECRET}"})
    with pytest.raises(BrokerError) as err:
        alpaca.broker.account()
    text = str(err.value) + repr(err.value) + str(err.value.__cause__) + str(err.value.__context__)
    assert KEY_ID not in text and SECRET not in text and "***" in text
    assert err.value.__cause__ is None and err.value.__suppress_context__
    venue.fail_next("GET", r"/v2/positions$", exception=requests.ConnectionError)
    with pytest.raises(BrokerError) as err:
        alpaca.broker.positions()
    assert KEY_ID not in str(err.value) and SECRET not in str(err.value)
    assert KEY_ID not in repr(alpaca.broker) and SECRET not in repr(alpaca.broker)
    headers = venue.log and json.dumps(venue.log)
    assert SECRET not in headers  # what the venue logged of our requests is bodies and queries only


def test_the_paper_endpoint_is_the_default_and_live_money_needs_both_switches(venue_config, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.delenv("TRADEGRAPH_LIVE_MONEY", raising=False)
    forget_venues()
    with use_config({"broker": {"kind": "alpaca"}}):
        assert BrokerResource().get_broker().endpoint == "paper"
        monkeypatch.setenv("TRADEGRAPH_LIVE_MONEY", "yes")
        forget_venues()
        assert BrokerResource().get_broker().endpoint == "paper"  # the variable alone switches nothing
    monkeypatch.delenv("TRADEGRAPH_LIVE_MONEY")
    with use_config({"broker": {"kind": "alpaca", "live_money": True}}):
        with pytest.raises(CredentialsError, match="TRADEGRAPH_LIVE_MONEY=yes"):
            BrokerResource().get_broker()
        monkeypatch.setenv("TRADEGRAPH_LIVE_MONEY", "yes")
        forget_venues()
        live = BrokerResource().get_broker()
        assert live.endpoint == "live"
        with responses.RequestsMock() as rsps:
            rsps.add(responses.GET, "https://api.alpaca.markets/v2/positions", json=[])
            assert live.positions() == {}
    forget_venues()


def test_missing_keys_are_named_never_guessed(venue_config, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    forget_venues()
    with use_config({"broker": {"kind": "alpaca"}}), pytest.raises(CredentialsError) as err:
        BrokerResource().get_broker()
    assert "APCA_API_KEY_ID" in str(err.value) and "APCA_API_SECRET_KEY" not in str(err.value)
    assert SECRET not in str(err.value)


def test_the_clients_own_retry_is_off(alpaca):
    client = alpaca.broker._client
    assert client._retry == 0 and isinstance(client._session.get_adapter("https://x"), VenueAdapter)
