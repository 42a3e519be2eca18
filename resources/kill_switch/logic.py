"""The kill switch: pre-trade risk checks and trading states, as pure functions over a state value.

Modelled on NautilusTrader's RiskEngine: a trading state decides what may pass, named reasons say why.

States and what passes (the most severe active trip decides the state):

* ``ACTIVE``: every order that passes the per-order checks.
* ``REDUCING``: only orders that reduce |position| without flipping it.
* ``HALTED``: nothing. Open orders are cancelled (``cancel_open_orders``; reduce-only orders may keep
  working since they only cut risk). With ``kill_switch.flatten_on_halt``, reduce-only flatten orders
  for every position are emitted once, by the first check after entering HALTED (``flatten_pending``).

Trips, all limits from ``kill_switch.*`` (a check whose value is NaN fails closed, i.e. trips):

============================  =================================================  ==========  =========================
trip reason                   breached when                                      state       cleared by
============================  =================================================  ==========  =========================
DAILY_LOSS                    1 − equity / start-of-day equity > daily_loss_pct  HALTED      next ``on_session_open``
DRAWDOWN                      1 − equity / high-water mark > drawdown_pct        HALTED      ``reset``
GROSS_EXPOSURE                Σ|qty × price| / equity > gross_exposure_max       REDUCING    ``reset``
ORDER_RATE                    orders in the bar > max_orders_per_bar             HALTED      ``reset``
STALE_DATA                    (now − bar close) / bar interval > stale_bars, or  HALTED      ``reset``
                              the bar's share of the universe with a fresh row
                              < min_fresh_share (a stalled feed)
BROKER_ERRORS                 consecutive broker errors >= broker_error_limit    HALTED      ``reset``
RECONCILIATION_MISMATCH       expected book ≠ broker book                        per config  ``reset``
MANUAL                        an operator's ``trip``                             HALTED*     ``reset``
STATE_CORRUPT                 the state file is unreadable or inconsistent       HALTED      ``reset``
============================  =================================================  ==========  =========================

``on_reconciliation_mismatch``: ``halt`` → HALTED, ``reducing`` → REDUCING, ``record`` → an event only.
(*) a manual trip may ask for REDUCING instead. Why these choices: losses, a runaway order count, stale
prices, a failing broker and a corrupt state all mean the engine's view cannot be trusted, so nothing
trades; too much gross exposure is cured by exactly the orders REDUCING lets through. Only the daily loss
clears by itself (a new session re-bases it); every other trip waits for a person (``reset`` with a
reason, which may re-base the high-water mark to current equity so a drawdown trip does not re-fire).

Per-order denials that leave the state unchanged: MAX_ORDER_NOTIONAL (|qty| × price > max_order_notional:
a fat-finger order is the sizer's error, not the book's risk, so only that order is denied, as Nautilus
does), INVALID_ORDER (quantity NaN/≤0 or unknown side), MISSING_PRICE, plus HALTED / REDUCING from the
state. The state checks run first, so a limit breached by this bar's inputs denies this bar's orders.
Flatten orders are the switch's own and skip the per-order checks (reduce-only at the broker).

Every check, verdict and transition comes back as a :class:`KillSwitchEvent` for lineage. The state is
persisted (``write_atomic_json``) by :class:`KillSwitch`, which holds the only file I/O of this module
(no Dagster, no DuckDB); an unreadable state file fails closed as HALTED / STATE_CORRUPT.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from TRAINING.common.utils.determinism_ordering import sorted_items
from TRAINING.common.utils.file_utils import read_json, write_atomic_json

STATE_VERSION = 1
log = logging.getLogger(__name__)


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class TripReason(StrEnum):
    DAILY_LOSS = "DAILY_LOSS"
    DRAWDOWN = "DRAWDOWN"
    GROSS_EXPOSURE = "GROSS_EXPOSURE"
    ORDER_RATE = "ORDER_RATE"
    STALE_DATA = "STALE_DATA"
    BROKER_ERRORS = "BROKER_ERRORS"
    RECONCILIATION_MISMATCH = "RECONCILIATION_MISMATCH"
    MANUAL = "MANUAL"
    STATE_CORRUPT = "STATE_CORRUPT"


class DenyReason(StrEnum):
    HALTED = "HALTED"
    REDUCING = "REDUCING"                      # the order would not reduce |position|
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    INVALID_ORDER = "INVALID_ORDER"
    MISSING_PRICE = "MISSING_PRICE"


class Verdict(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True)
class Limits:
    daily_loss_pct: float
    drawdown_pct: float
    gross_exposure_max: float
    max_order_notional: float
    max_orders_per_bar: int
    stale_bars: float
    broker_error_limit: int
    bar_minutes: int
    flatten_on_halt: bool
    on_reconciliation_mismatch: str
    min_fresh_share: float = 0.0

    @classmethod
    def from_config(cls) -> Limits:
        k = "kill_switch."
        return cls(get_cfg(k + "daily_loss_pct"), get_cfg(k + "drawdown_pct"), get_cfg(k + "gross_exposure_max"),
                   get_cfg(k + "max_order_notional"), get_cfg(k + "max_orders_per_bar"), get_cfg(k + "stale_bars"),
                   get_cfg(k + "broker_error_limit"), get_cfg("market.bar_minutes"), get_cfg(k + "flatten_on_halt"),
                   get_cfg(k + "on_reconciliation_mismatch"), get_cfg(k + "min_fresh_share"))

    def reconciliation_state(self) -> TradingState | None:
        return {"halt": TradingState.HALTED, "reducing": TradingState.REDUCING}.get(self.on_reconciliation_mismatch)


_TRIP_STATE = {TripReason.DAILY_LOSS: TradingState.HALTED, TripReason.DRAWDOWN: TradingState.HALTED,
               TripReason.GROSS_EXPOSURE: TradingState.REDUCING, TripReason.ORDER_RATE: TradingState.HALTED,
               TripReason.STALE_DATA: TradingState.HALTED, TripReason.BROKER_ERRORS: TradingState.HALTED,
               TripReason.MANUAL: TradingState.HALTED, TripReason.STATE_CORRUPT: TradingState.HALTED}


@dataclass(frozen=True)
class Trip:
    reason: TripReason
    state: TradingState
    ts: dt.datetime
    value: float | None = None
    limit: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class KillSwitchState:
    """Active trips plus the baselines the loss checks need. The trading state is derived from trips."""

    trips: Mapping[TripReason, Trip] = field(default_factory=dict)
    session_date: dt.date | None = None
    start_of_day_equity: float | None = None
    high_water_mark: float | None = None
    consecutive_broker_errors: int = 0
    flatten_pending: bool = False
    updated_at: dt.datetime | None = None

    @property
    def state(self) -> TradingState:
        return max((t.state for t in self.trips.values()), key=_SEVERITY.__getitem__, default=TradingState.ACTIVE)


@dataclass(frozen=True)
class KillSwitchEvent:
    """One check, order verdict or transition. ``verdict``: PASS / TRIP / RECORD / SKIP for checks, ALLOW /
    DENY for orders, INFO for bookkeeping; ``transition`` like ``ACTIVE->HALTED`` when the state moved."""

    ts: dt.datetime
    check: str
    value: float | None
    limit: float | None
    verdict: str
    reason: str
    transition: str | None = None
    subject: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_VERDICT_COLS = ["client_order_id", "symbol", "side", "quantity", "price", "notional", "reduces", "verdict",
                 "reason"]
_ORDER_COLS = ["client_order_id", "symbol", "side", "quantity", "bar_key", "reduce_only"]


@dataclass(frozen=True)
class CheckResult:
    """What one kill-switch operation decided. ``verdicts`` has one row per order in input order
    (columns ``_VERDICT_COLS``); ``flatten_orders`` has reduce-only orders to send (``_ORDER_COLS``)."""

    state: KillSwitchState
    events: list[KillSwitchEvent]
    verdicts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_VERDICT_COLS))
    flatten_orders: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_ORDER_COLS))

    @property
    def trading_state(self) -> TradingState:
        return self.state.state

    @property
    def cancel_open_orders(self) -> bool:
        """HALTED: the caller cancels open orders (idempotent, so every halted bar asks again)."""
        return self.state.state is TradingState.HALTED

    @property
    def allowed(self) -> pd.DataFrame:
        return self.verdicts[self.verdicts["verdict"] == Verdict.ALLOW.value]

    def events_frame(self) -> pd.DataFrame:
        return pd.DataFrame([e.as_dict() for e in self.events], columns=list(KillSwitchEvent.__dataclass_fields__))


# ---- transitions ---------------------------------------------------------------------------------------

def _apply(old: KillSwitchState, new: KillSwitchState, now: dt.datetime, reason: str,
           limits: Limits) -> tuple[KillSwitchState, list[KillSwitchEvent]]:
    """Stamp ``new``; emit a transition event if the trading state moved; arm flatten on entering HALTED."""
    new = replace(new, updated_at=now)
    if old.state is new.state:
        return new, []
    if new.state is TradingState.HALTED:
        new = replace(new, flatten_pending=limits.flatten_on_halt)
    elif old.state is TradingState.HALTED:
        new = replace(new, flatten_pending=False)
    return new, [KillSwitchEvent(now, "transition", None, None, "INFO", reason, f"{old.state}->{new.state}")]


def _with_trips(state: KillSwitchState, trips: Sequence[Trip]) -> KillSwitchState:
    """Add trips; an already active reason keeps its first trip (when and why it first fired)."""
    merged = dict(state.trips)
    for t in trips:
        merged.setdefault(t.reason, t)
    return replace(state, trips=dict(sorted_items(merged)))


def trip(state: KillSwitchState, reason: str, now: dt.datetime, *, limits: Limits,
         target: TradingState = TradingState.HALTED) -> CheckResult:
    """A manual trip (operator, CLI, a Dagster job)."""
    if not reason.strip():
        raise ValueError("a manual trip needs a reason")
    target = TradingState(target)
    if target is TradingState.ACTIVE:
        raise ValueError("a manual trip goes to REDUCING or HALTED")
    new, events = _apply(state, _with_trips(state, [Trip(TripReason.MANUAL, target, now, detail=reason)]),
                         now, f"{TripReason.MANUAL}: {reason}", limits)
    event = KillSwitchEvent(now, "manual", None, None, "TRIP", reason)
    return CheckResult(new, [event, *events])


def reset(state: KillSwitchState, reason: str, now: dt.datetime, *, limits: Limits,
          equity: float | None = None) -> CheckResult:
    """Clear every trip (a person decided). ``equity`` re-bases the high-water mark to it."""
    if not reason.strip():
        raise ValueError("a reset needs a reason")
    cleared = ", ".join(state.trips) or "none"
    new = replace(state, trips={}, consecutive_broker_errors=0, flatten_pending=False,
                  high_water_mark=equity if equity is not None else state.high_water_mark)
    new, events = _apply(state, new, now, f"reset: {reason}", limits)
    event = KillSwitchEvent(now, "reset", equity, None, "INFO", f"{reason} (cleared: {cleared})")
    return CheckResult(new, [event, *events])


def on_session_open(state: KillSwitchState, session_date: dt.date, equity: float, now: dt.datetime, *,
                    limits: Limits, implicit: bool = False) -> CheckResult:
    """A new session: re-base start-of-day equity (and the high-water mark), clear a daily-loss trip."""
    trips = {r: t for r, t in state.trips.items() if r is not TripReason.DAILY_LOSS}
    new = replace(state, trips=trips, session_date=session_date, start_of_day_equity=equity,
                  high_water_mark=_hwm(state.high_water_mark, equity))
    how = "implicit: first check of the session, no on_session_open before it" if implicit else "session open"
    new, events = _apply(state, new, now, f"{how}; daily loss re-based", limits)
    event = KillSwitchEvent(now, "session_open", equity, None, "INFO", f"{how} {session_date}")
    return CheckResult(new, [event, *events])


def record_broker_outcomes(state: KillSwitchState, outcomes: Sequence[bool], now: dt.datetime, *,
                           limits: Limits) -> CheckResult:
    """Count consecutive broker errors in submission order (True = the broker answered, a reject
    included; False = an error or timeout). Reaching the limit at any point trips BROKER_ERRORS."""
    count, peak = state.consecutive_broker_errors, state.consecutive_broker_errors
    for ok in outcomes:  # the orders of one bar
        count = 0 if ok else count + 1
        peak = max(peak, count)
    breached = peak >= limits.broker_error_limit
    new = replace(state, consecutive_broker_errors=count)
    detail = f"{peak} consecutive broker errors (limit {limits.broker_error_limit})"
    if breached:
        new = _with_trips(new, [Trip(TripReason.BROKER_ERRORS, TradingState.HALTED, now, peak,
                                     limits.broker_error_limit, detail)])
    new, events = _apply(state, new, now, f"{TripReason.BROKER_ERRORS}: {detail}", limits)
    event = KillSwitchEvent(now, "broker_errors", float(peak), float(limits.broker_error_limit),
                            "TRIP" if breached else "PASS", detail)
    return CheckResult(new, [event, *events])


# ---- the pre-trade check ---------------------------------------------------------------------------------

def _orders_frame(orders: pd.DataFrame | Sequence[Any]) -> pd.DataFrame:
    """Orders as a DataFrame (``OrderRequest``-like objects or a frame with the same columns)."""
    if isinstance(orders, pd.DataFrame):
        df = orders.reset_index(drop=True).copy()
    else:
        df = pd.DataFrame([asdict(o) if is_dataclass(o) else dict(o) for o in orders])
    for col, default in (("client_order_id", ""), ("symbol", ""), ("side", ""), ("quantity", np.nan),
                         ("reduce_only", False)):
        if col not in df:
            df[col] = default
    df["side"] = df["side"].astype(str)
    df["quantity"] = pd.to_numeric(df["quantity"], errors="coerce").astype(float)
    return df


def _hwm(previous: float | None, equity: float) -> float | None:
    finite = [x for x in (previous, equity) if x is not None and math.isfinite(x)]
    return max(finite) if finite else None


def _loss_breached(base: float | None, equity: float, pct: float) -> bool:
    """Loss over ``pct`` of ``base``, decided in money (exact at the boundary); NaN or no base → True."""
    if base is None or not base > 0:
        return True
    return not base - equity <= pct * base


def _ratio(num: float, den: float | None) -> float:
    """num / den with a missing or non-positive denominator failing closed (inf or NaN)."""
    if den is None or not math.isfinite(den):
        return math.nan
    return num / den if den > 0 else math.inf


def pre_trade_check(state: KillSwitchState, orders: pd.DataFrame | Sequence[Any], *,
                    positions: Mapping[str, float] | pd.Series, prices: Mapping[str, float] | pd.Series,
                    equity: float, now: dt.datetime, bar_ts: dt.datetime, session_date: dt.date,
                    limits: Limits, reconciliation_mismatch: bool | int | None = None,
                    bar_key: str | None = None, fresh_share: float | None = None) -> CheckResult:
    """The verdict on one bar's orders, given the book before them.

    ``positions`` symbol → signed quantity, ``prices`` symbol → last price (pass the last mark for held
    symbols without a fresh price: held symbols left unpriced are named in the gross-exposure event and
    left out of its value), ``equity`` current portfolio value, ``now`` the decision time, ``bar_ts`` the
    bar's close, ``reconciliation_mismatch`` from the positions reconciliation (None: not checked),
    ``fresh_share`` the share of the universe with a row at this bar (None: not checked; below
    ``min_fresh_share`` the feed has stalled: STALE_DATA; NaN fails closed).
    Orders of one symbol are taken cumulatively in input order to decide whether each reduces.
    """
    bar_key = bar_key or bar_ts.isoformat()
    events: list[KillSwitchEvent] = []
    if state.session_date != session_date:
        opened = on_session_open(state, session_date, equity, now, limits=limits, implicit=True)
        state, events = opened.state, list(opened.events)
    old = state

    pos = pd.Series(positions, dtype=float)
    pos = pos[pos != 0].sort_index()
    px = pd.Series(prices, dtype=float)
    held_px = px.reindex(pos.index).to_numpy()
    priced = np.isfinite(held_px) & (held_px > 0)
    gross = float(np.abs(pos.to_numpy()[priced] * held_px[priced]).sum())
    unpriced = list(pos.index[~priced])
    hwm = _hwm(state.high_water_mark, equity)
    o = _orders_frame(orders)

    age_s, bar_s = (now - bar_ts).total_seconds(), limits.bar_minutes * 60.0
    age_bars = age_s / bar_s
    sod = state.start_of_day_equity
    daily_loss = 1.0 - _ratio(equity, sod)
    drawdown = 1.0 - _ratio(equity, hwm)
    exposure = _ratio(gross, equity)
    recon_action = limits.reconciliation_state()
    # (check, value, limit, breached, reason, target state or None, note)
    checks: list[tuple[str, float | None, float | None, bool, TripReason, TradingState | None, str]] = [
        ("stale_data", age_bars, limits.stale_bars, not age_s <= limits.stale_bars * bar_s, TripReason.STALE_DATA,
         TradingState.HALTED, f"bar {bar_ts.isoformat()} is {age_bars:.2f} intervals old"),
        ("daily_loss", daily_loss, limits.daily_loss_pct, _loss_breached(sod, equity, limits.daily_loss_pct),
         TripReason.DAILY_LOSS, TradingState.HALTED,
         f"equity {equity} vs start-of-day {state.start_of_day_equity}"),
        ("drawdown", drawdown, limits.drawdown_pct, _loss_breached(hwm, equity, limits.drawdown_pct),
         TripReason.DRAWDOWN,
         TradingState.HALTED, f"equity {equity} vs high-water mark {hwm}"),
        ("gross_exposure", exposure, limits.gross_exposure_max, not gross <= limits.gross_exposure_max * equity,
         TripReason.GROSS_EXPOSURE, TradingState.REDUCING,
         f"gross {gross} / equity {equity}" + (f"; unpriced held symbols left out: {unpriced}" if unpriced else "")),
        ("order_rate", float(len(o)), float(limits.max_orders_per_bar), len(o) > limits.max_orders_per_bar,
         TripReason.ORDER_RATE, TradingState.HALTED, f"{len(o)} orders this bar"),
        ("broker_errors", float(state.consecutive_broker_errors), float(limits.broker_error_limit),
         state.consecutive_broker_errors >= limits.broker_error_limit, TripReason.BROKER_ERRORS,
         TradingState.HALTED, f"{state.consecutive_broker_errors} consecutive broker errors"),
    ]
    if fresh_share is not None:
        checks.append(("fresh_rows", fresh_share, limits.min_fresh_share, not fresh_share >= limits.min_fresh_share,
                       TripReason.STALE_DATA, TradingState.HALTED,
                       f"{fresh_share:.0%} of the universe has a row at bar {bar_ts.isoformat()} "
                       f"(stalled feed below {limits.min_fresh_share:.0%})"))
    if reconciliation_mismatch is not None:
        checks.append(("reconciliation", float(reconciliation_mismatch), 0.0, bool(reconciliation_mismatch),
                       TripReason.RECONCILIATION_MISMATCH, recon_action,
                       f"expected vs broker book: {int(reconciliation_mismatch)} mismatch(es); "
                       f"action {limits.on_reconciliation_mismatch}"))
    new_trips = []
    for name, value, limit, breached, reason, target, note in checks:
        verdict = "PASS" if not breached else ("TRIP" if target is not None else "RECORD")
        events.append(KillSwitchEvent(now, name, None if value is None or math.isnan(value) else value,
                                      limit, verdict, f"{reason}: {note}" if breached else note))
        if breached and target is not None:
            new_trips.append(Trip(reason, target, now, value if value == value else None, limit, note))
    new = _with_trips(replace(state, high_water_mark=hwm), new_trips)
    trip_text = ", ".join(t.reason for t in new_trips if t.reason not in old.trips) or "state checks"
    new, transition = _apply(old, new, now, trip_text, limits)
    events += transition
    verdicts = _order_verdicts(o, pos, px, new.state, limits)
    events += [KillSwitchEvent(now, "order", None if math.isnan(r["notional"]) else r["notional"],
                               limits.max_order_notional, r["verdict"], r["reason"], subject=r["client_order_id"])
               for r in verdicts.to_dict("records")]
    flatten = pd.DataFrame(columns=_ORDER_COLS)
    if new.state is TradingState.HALTED and new.flatten_pending:
        flatten = flatten_orders(pos, bar_key)
        new = replace(new, flatten_pending=False)
        events.append(KillSwitchEvent(now, "flatten", float(len(flatten)), None, "INFO",
                                      f"{len(flatten)} reduce-only flatten order(s) for bar {bar_key}"))
    return CheckResult(new, events, verdicts, flatten)


def _order_verdicts(o: pd.DataFrame, pos: pd.Series, px: pd.Series, state: TradingState,
                    limits: Limits) -> pd.DataFrame:
    """Per-order ALLOW/DENY, vectorised over the bar's orders."""
    sign = np.select([o["side"].str.upper() == "BUY", o["side"].str.upper() == "SELL"], [1.0, -1.0], 0.0)
    q = o["quantity"].to_numpy()
    d = sign * np.nan_to_num(q)
    before = pos.reindex(o["symbol"]).fillna(0.0).to_numpy() + (
        pd.Series(d).groupby(o["symbol"].to_numpy()).cumsum().to_numpy() - d)
    after = before + d
    reduces = (np.abs(after) < np.abs(before)) & (np.sign(after) * np.sign(before) >= 0)
    price = px.reindex(o["symbol"]).to_numpy()
    notional = np.abs(q) * price
    invalid = (sign == 0) | ~np.isfinite(q) | (q <= 0)
    missing = ~(np.isfinite(price) & (price > 0))
    reason = np.select(
        [invalid, missing, np.full(len(o), state is TradingState.HALTED),
         (state is TradingState.REDUCING) & ~reduces, notional > limits.max_order_notional],
        [DenyReason.INVALID_ORDER.value, DenyReason.MISSING_PRICE.value, DenyReason.HALTED.value,
         DenyReason.REDUCING.value, DenyReason.MAX_ORDER_NOTIONAL.value], "")
    return pd.DataFrame({"client_order_id": o["client_order_id"].astype(str), "symbol": o["symbol"],
                         "side": o["side"], "quantity": q, "price": price, "notional": notional,
                         "reduces": reduces, "verdict": np.where(reason == "", Verdict.ALLOW.value,
                                                                 Verdict.DENY.value),
                         "reason": reason}, columns=_VERDICT_COLS)


def flatten_orders(positions: pd.Series, bar_key: str) -> pd.DataFrame:
    """Reduce-only market orders taking every position to zero, with deterministic client ids."""
    pos = positions[positions != 0].sort_index()
    side = np.where(pos.to_numpy() > 0, "SELL", "BUY")
    qty = np.abs(pos.to_numpy())
    ids = [f"KS-{hashlib.sha256(f'flatten|{bar_key}|{s}|{sd}|{float(q)!r}'.encode()).hexdigest()[:20]}"
           for s, sd, q in zip(pos.index, side, qty, strict=True)]
    return pd.DataFrame({"client_order_id": ids, "symbol": pos.index.astype(str), "side": side, "quantity": qty,
                         "bar_key": bar_key, "reduce_only": True}, columns=_ORDER_COLS)


# ---- persistence -----------------------------------------------------------------------------------------

def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def state_to_dict(state: KillSwitchState) -> dict[str, Any]:
    """The JSON form of a state (non-finite numbers become null: canonical JSON has no NaN)."""
    return {
        "version": STATE_VERSION,
        "state": state.state.value,
        "trips": {r.value: {"state": t.state.value, "ts": t.ts, "value": _num(t.value), "limit": _num(t.limit),
                            "detail": t.detail} for r, t in state.trips.items()},
        "session_date": state.session_date,
        "start_of_day_equity": _num(state.start_of_day_equity),
        "high_water_mark": _num(state.high_water_mark),
        "consecutive_broker_errors": state.consecutive_broker_errors,
        "flatten_pending": state.flatten_pending,
        "updated_at": state.updated_at,
    }


def _ts(s: str | None) -> dt.datetime | None:
    if s is None:
        return None
    ts = dt.datetime.fromisoformat(s)
    if ts.tzinfo is None:
        raise ValueError(f"naive timestamp {s!r}")
    return ts


def _opt_float(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"expected a number, got {x!r}")
    return float(x)


def state_from_dict(d: Mapping[str, Any]) -> KillSwitchState:
    """Parse a state; anything unexpected raises ``ValueError`` (the caller fails closed)."""
    if not isinstance(d, Mapping) or d.get("version") != STATE_VERSION:
        raise ValueError(f"not a kill switch state of version {STATE_VERSION}")
    trips = {TripReason(r): Trip(TripReason(r), TradingState(t["state"]), _ts(t["ts"]), _opt_float(t["value"]),
                                 _opt_float(t["limit"]), str(t["detail"]))
             for r, t in sorted_items(d["trips"])}
    errors = d["consecutive_broker_errors"]
    if isinstance(errors, bool) or not isinstance(errors, int) or errors < 0:
        raise ValueError(f"consecutive_broker_errors {errors!r}")
    if not isinstance(d["flatten_pending"], bool):
        raise ValueError(f"flatten_pending {d['flatten_pending']!r}")
    state = KillSwitchState(
        trips=trips, session_date=dt.date.fromisoformat(d["session_date"]) if d["session_date"] else None,
        start_of_day_equity=_opt_float(d["start_of_day_equity"]), high_water_mark=_opt_float(d["high_water_mark"]),
        consecutive_broker_errors=errors, flatten_pending=d["flatten_pending"], updated_at=_ts(d["updated_at"]))
    if state.state.value != d["state"]:
        raise ValueError(f"recorded state {d['state']!r} disagrees with its trips ({state.state})")
    return state


def load_state(path: Path, now: dt.datetime) -> tuple[KillSwitchState, list[KillSwitchEvent], bool]:
    """(state, events, corrupt). No file → a fresh ACTIVE state. A file that cannot be read or parsed
    → HALTED with STATE_CORRUPT (fail closed), said loudly in the event."""
    if not path.exists():
        return KillSwitchState(), [], False
    try:
        return state_from_dict(read_json(path)), [], False
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = (f"kill switch state file {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                  "FAILING CLOSED: HALTED until a person inspects it and runs `reset --reason ...`")
        state = KillSwitchState(trips={TripReason.STATE_CORRUPT: Trip(
            TripReason.STATE_CORRUPT, TradingState.HALTED, now, detail=detail)}, updated_at=now)
        log.error(detail)
        return state, [KillSwitchEvent(now, "state_file", None, None, "TRIP", detail, "?->HALTED")], True


class KillSwitch:
    """The file-backed kill switch: each operation locks the state file (``fcntl``, so a manual trip from
    the CLI is never lost to a concurrent run), loads it (fail closed), applies one pure function, saves
    it with ``write_atomic_json`` and returns the :class:`CheckResult`. A corrupt file is kept beside the
    state as ``<name>.corrupt`` for inspection before it is replaced by the HALTED state."""

    def __init__(self, path: str | Path | None = None, limits: Limits | None = None) -> None:
        self.path = Path(path) if path is not None else resolve_path("paths.kill_switch_state")
        self._limits = limits

    @property
    def limits(self) -> Limits:
        return self._limits or Limits.from_config()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _transact(self, now: dt.datetime, op: Callable[[KillSwitchState], CheckResult]) -> CheckResult:
        with self._locked():
            state, events, corrupt = load_state(self.path, now)
            if corrupt:
                shutil.copyfile(self.path, self.path.with_name(self.path.name + ".corrupt"))
            result = op(state)
            write_atomic_json(self.path, state_to_dict(result.state))
        return replace(result, events=[*events, *result.events])

    def status(self, now: dt.datetime) -> CheckResult:
        """The persisted state, read only (a corrupt file reads as HALTED / STATE_CORRUPT)."""
        with self._locked():
            state, events, _ = load_state(self.path, now)
        return CheckResult(state, events)

    def pre_trade_check(self, orders: pd.DataFrame | Sequence[Any], **kwargs: Any) -> CheckResult:
        """See :func:`pre_trade_check` (every keyword but ``limits``)."""
        return self._transact(kwargs["now"], lambda s: pre_trade_check(s, orders, limits=self.limits, **kwargs))

    def record_broker_outcomes(self, outcomes: Sequence[bool], now: dt.datetime) -> CheckResult:
        return self._transact(now, lambda s: record_broker_outcomes(s, outcomes, now, limits=self.limits))

    def trip(self, reason: str, now: dt.datetime, target: TradingState = TradingState.HALTED) -> CheckResult:
        return self._transact(now, lambda s: trip(s, reason, now, limits=self.limits, target=target))

    def reset(self, reason: str, now: dt.datetime, equity: float | None = None) -> CheckResult:
        return self._transact(now, lambda s: reset(s, reason, now, limits=self.limits, equity=equity))

    def on_session_open(self, session_date: dt.date, equity: float, now: dt.datetime) -> CheckResult:
        return self._transact(now, lambda s: on_session_open(s, session_date, equity, now, limits=self.limits))
