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
STATE_MISSING                 the switch was armed and its state file is gone    HALTED      ``reset``
NOT_ARMED                     the switch was never armed (no state, no witness)  HALTED      ``init``
============================  =================================================  ==========  =========================

Failing closed when the state file is missing (SPEC §9). The switch is *armed* by ``init`` (``tradegraph
kill-switch init``, the ``make ui`` launcher, the demo's replay account, test fixtures) or by its first
write (a manual trip). A missing file is then ambiguous: a first start, or a deleted file. A second witness
outside the state file decides (:class:`KillSwitch` takes it as a callable: ``resources.kill_switch.witness``
asks the lineage file's kill-switch records and the broker account's positions, working orders and fills —
the broker is the truth). Witnessed: HALTED / STATE_MISSING, written back so it persists until a person
resets it. Not witnessed: NOT_ARMED, every order denied, and nothing written — deleting the file can
never silently re-arm the switch; only ``init`` does, and ``init`` refuses when a witness says the switch
was armed before (that is a ``reset``, with a reason).

``on_reconciliation_mismatch``: ``halt`` → HALTED, ``reducing`` → REDUCING, ``record`` → an event only.
(*) a manual trip may ask for REDUCING instead. Why these choices: losses, a runaway order count, stale
prices, a failing broker and a corrupt state all mean the engine's view cannot be trusted, so nothing
trades; too much gross exposure is cured by exactly the orders REDUCING lets through. Only the daily loss
clears by itself (a new session re-bases it); every other trip waits for a person (``reset`` with a
reason, which may re-base the high-water mark to current equity so a drawdown trip does not re-fire).

Per-order denials that leave the state unchanged: MAX_ORDER_NOTIONAL (|qty| × price > max_order_notional:
a fat-finger order is the sizer's error, not the book's risk, so only that order is denied, as Nautilus
does), GROSS_EXPOSURE (the gross exposure *after* the bar's orders would exceed gross_exposure_max × equity),
INVALID_ORDER (quantity NaN/≤0 or unknown side), MISSING_PRICE, plus HALTED / REDUCING from the state.
The state checks run first, so a limit breached by this bar's inputs denies this bar's orders.

Gross after the bar's orders (why denied, not scaled: a scaled order is a different decision, with a
different client_order_id, that the sizer never made and the audit cannot reproduce). The base is the book
plus the working orders' remaining quantity (``pending``); every order's change of |position| × price is
taken cumulatively per symbol in input order; exposure-reducing orders always pass (only HALTED stops
them) and free room for the rest; the increasing ones pass in input order while the running gross stays
≤ the limit (equal passes), the first one that would cross it and every later increasing order is denied.
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
    STATE_MISSING = "STATE_MISSING"
    NOT_ARMED = "NOT_ARMED"


class DenyReason(StrEnum):
    HALTED = "HALTED"
    REDUCING = "REDUCING"                      # the order would not reduce |position|
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    GROSS_EXPOSURE = "GROSS_EXPOSURE"          # gross after the bar's orders would exceed gross_exposure_max
    INVALID_ORDER = "INVALID_ORDER"
    MISSING_PRICE = "MISSING_PRICE"


class KillSwitchError(RuntimeError):
    """An operation the switch's state does not allow (init over a witnessed state, reset of a never-armed
    switch): said to the operator, nothing changed."""


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
               TripReason.MANUAL: TradingState.HALTED, TripReason.STATE_CORRUPT: TradingState.HALTED,
               TripReason.STATE_MISSING: TradingState.HALTED, TripReason.NOT_ARMED: TradingState.HALTED}


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


_STR = pd.Series(["x"]).astype(str).dtype   # what ``astype(str)`` gives (pandas' default string dtype)
_VERDICT_COLS = ["client_order_id", "symbol", "side", "quantity", "price", "notional", "reduces", "verdict",
                 "reason"]
_ORDER_COLS = ["client_order_id", "symbol", "side", "quantity", "bar_key", "reduce_only"]
_NO_ORDERS = pd.DataFrame(columns=_ORDER_COLS)


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
    """A new session: re-base start-of-day equity (and the high-water mark), clear a daily-loss trip.

    Only once per session and only forward: for a session at or before the one the switch already opened
    (a pre-open job launched again by hand mid-session, a re-execution) nothing is re-based and no trip is
    cleared — a daily-loss HALT lasts until the next session's open, whoever launches what."""
    if state.session_date is not None and session_date <= state.session_date:
        event = KillSwitchEvent(now, "session_open", equity, None, "INFO",
                                f"session {session_date} already opened (switch at {state.session_date}): "
                                "nothing re-based, no trip cleared")
        return CheckResult(state, [event])
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
    if df["side"].dtype != _STR:   # already text (a sized-orders frame): astype(str) would change nothing
        df["side"] = df["side"].astype(str)
    if df["quantity"].dtype != np.float64:
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
                    bar_key: str | None = None, pending: Mapping[str, float] | pd.Series | None = None,
                    mismatched: Sequence[str] = (), session_open: bool = True,
                    fresh_share: float | None = None) -> CheckResult:
    """The verdict on one bar's orders, given the book before them.

    ``positions`` symbol → signed quantity, ``prices`` symbol → last price (pass the last mark for held
    symbols without a fresh price: held symbols left unpriced are named in the gross-exposure event and
    left out of its value), ``equity`` current portfolio value, ``now`` the decision time, ``bar_ts`` the
    bar's close, ``reconciliation_mismatch`` the number of mismatched symbols from the positions
    reconciliation (None: not checked; ``mismatched`` names them), ``pending`` symbol → signed remaining
    quantity of working orders (counted in the gross after the bar's orders). Orders of one symbol are
    taken cumulatively in input order to decide whether each reduces. ``session_open`` False (the
    session's closing bar): flatten orders are held back (still pending) for the next open session.
    ``fresh_share`` the share of the universe with a row at this bar (None: not checked; below
    ``min_fresh_share`` the feed has stalled: STALE_DATA; NaN fails closed).
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
    if px.index.is_unique:   # ``px.reindex(pos.index)`` with one indexer (the usual: a dict's keys)
        at, px_v = px.index.get_indexer(pos.index), px.to_numpy()
        held_px = np.where(at >= 0, px_v[at] if len(px_v) else np.nan, np.nan)
    else:
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
        n_bad = int(reconciliation_mismatch)
        named = f" ({', '.join(mismatched)})" if mismatched else ""
        checks.append(("reconciliation", float(n_bad), 0.0, n_bad > 0,
                       TripReason.RECONCILIATION_MISMATCH, recon_action,
                       f"expected vs broker book: {n_bad} symbol(s) mismatched{named}; "
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
    base = pos.add(pd.Series(pending if pending is not None else {}, dtype=float), fill_value=0.0)
    verdicts, gross_after = _order_verdicts(o, base, px, new.state, limits, equity)
    n_gross = int((verdicts["reason"] == DenyReason.GROSS_EXPOSURE).sum())
    events.append(KillSwitchEvent(now, "gross_after_orders", _ratio(gross_after, equity), limits.gross_exposure_max,
                                  "RECORD" if n_gross else "PASS",
                                  f"gross after the bar's allowed orders {gross_after} / equity {equity}; "
                                  f"{n_gross} order(s) denied for it"))
    events += [KillSwitchEvent(now, "order", None if math.isnan(notional) else notional, limits.max_order_notional,
                               verdict, reason, subject=cid)
               for cid, notional, verdict, reason in zip(
                   verdicts["client_order_id"].tolist(), verdicts["notional"].tolist(), verdicts["verdict"].tolist(),
                   verdicts["reason"].tolist(), strict=True)]
    flatten = _no_orders()
    if new.state is TradingState.HALTED and new.flatten_pending and not session_open:
        events.append(KillSwitchEvent(now, "flatten", None, None, "SKIP",
                                      f"the session has closed at bar {bar_key}: flatten orders wait for the "
                                      "next open session"))
    elif new.state is TradingState.HALTED and new.flatten_pending:
        flatten = flatten_orders(pos, bar_key)
        new = replace(new, flatten_pending=False)
        events.append(KillSwitchEvent(now, "flatten", float(len(flatten)), None, "INFO",
                                      f"{len(flatten)} reduce-only flatten order(s) for bar {bar_key}"))
    return CheckResult(new, events, verdicts, flatten)


def _no_orders() -> pd.DataFrame:
    """``pd.DataFrame(columns=_ORDER_COLS)``: a copy of one built once (most checks emit no flatten order)."""
    return _NO_ORDERS.copy()


def _order_verdicts(o: pd.DataFrame, base: pd.Series, px: pd.Series, state: TradingState,
                    limits: Limits, equity: float) -> tuple[pd.DataFrame, float]:
    """Per-order ALLOW/DENY, vectorised over the bar's orders; and the gross after the allowed ones.
    ``base`` is symbol → signed quantity before the orders (book + working orders).

    The usual bar (sides exactly ``BUY``/``SELL``, text symbols, unique ``base`` and ``px`` labels) looks its
    symbols up with one ``get_indexer`` per source and builds the verdicts from arrays; anything else takes the
    ``str.upper`` / ``reindex`` path. Both give the same table and gross, bit for bit (tests/unit/
    test_stepping_fast_paths2.py)."""
    symbols = o["symbol"].tolist()
    sides = o["side"].tolist()
    fast = (all(type(s) is str and (s == "BUY" or s == "SELL") for s in sides)
            and all(type(s) is str for s in symbols) and base.index.is_unique and px.index.is_unique
            and base.dtype == np.float64 and px.dtype == np.float64)
    if fast:   # the usual bar: plain lookups, no pandas alignment
        sign = np.array([1.0 if s == "BUY" else -1.0 for s in sides], dtype=float)
    else:
        side = o["side"].str.upper()
        sign = np.select([side == "BUY", side == "SELL"], [1.0, -1.0], 0.0)
    q = o["quantity"].to_numpy()
    d = sign * np.nan_to_num(q)
    if all(type(s) is str for s in symbols) and len(set(symbols)) == len(symbols):
        earlier = np.zeros(len(d))   # one order per symbol (the usual bar): nothing before it in its symbol
    else:
        earlier = pd.Series(d).groupby(o["symbol"].to_numpy()).cumsum().to_numpy() - d
    if fast:
        at_base, at_px = base.index.get_indexer(symbols), px.index.get_indexer(symbols)
        base_v, px_v = base.to_numpy(), px.to_numpy()
        on_base = np.where(at_base >= 0, base_v[at_base] if len(base_v) else 0.0, np.nan)
        before = np.where(np.isnan(on_base), 0.0, on_base) + earlier
        price = np.where(at_px >= 0, px_v[at_px] if len(px_v) else np.nan, np.nan)
    else:
        before = base.reindex(o["symbol"]).fillna(0.0).to_numpy() + earlier
        price = px.reindex(o["symbol"]).to_numpy()
    after = before + d
    reduces = (np.abs(after) < np.abs(before)) & (np.sign(after) * np.sign(before) >= 0)
    notional = np.abs(q) * price
    invalid = (sign == 0) | ~np.isfinite(q) | (q <= 0)
    missing = ~(np.isfinite(price) & (price > 0))
    reason = np.select(
        [invalid, missing, np.full(len(o), state is TradingState.HALTED),
         (state is TradingState.REDUCING) & ~reduces, notional > limits.max_order_notional],
        [DenyReason.INVALID_ORDER.value, DenyReason.MISSING_PRICE.value, DenyReason.HALTED.value,
         DenyReason.REDUCING.value, DenyReason.MAX_ORDER_NOTIONAL.value], "")
    # gross after the bar's orders: reducing orders always pass and free room; increasing ones pass in
    # input order while the running gross stays within the limit
    if fast:
        held_v = base_v[base_v != 0]
        at_held = px.index.get_indexer(base.index[base_v != 0])
        held_px = np.where(at_held >= 0, px_v[at_held] if len(px_v) else np.nan, np.nan)
        gross_before = float(np.nansum(np.abs(held_v * held_px)))
    else:
        held = base[base != 0]
        held_px = px.reindex(held.index).to_numpy()
        gross_before = float(np.nansum(np.abs(held.to_numpy() * held_px)))
    with np.errstate(invalid="ignore"):
        change = np.where(reason == "", (np.abs(after) - np.abs(before)) * price, 0.0)
    freed = float(change[change < 0].sum())
    inc = np.where(change > 0, change, 0.0)
    room = limits.gross_exposure_max * equity - gross_before - freed if math.isfinite(equity) else math.nan
    over = (change > 0) & ~(np.cumsum(inc) <= room)
    over = np.maximum.accumulate(over) & (change > 0)  # once one is over, every later increasing one is too
    reason = np.where(over, DenyReason.GROSS_EXPOSURE.value, reason)
    gross_after = gross_before + freed + float(inc[~over].sum())
    verdict = np.where(reason == "", Verdict.ALLOW.value, Verdict.DENY.value)
    cid = o["client_order_id"]
    if fast and cid.dtype == _STR and o["symbol"].dtype == _STR and o["side"].dtype == _STR:
        # the text columns as they are (``astype(str)`` of a text column changes nothing): no conversion
        return pd.DataFrame({"client_order_id": cid.array, "symbol": o["symbol"].array,
                             "side": o["side"].array, "quantity": q, "price": price, "notional": notional,
                             "reduces": reduces, "verdict": verdict, "reason": reason},
                            index=o.index, columns=_VERDICT_COLS), gross_after
    return pd.DataFrame({"client_order_id": o["client_order_id"].astype(str), "symbol": o["symbol"],
                         "side": o["side"], "quantity": q, "price": price, "notional": notional,
                         "reduces": reduces, "verdict": np.where(reason == "", Verdict.ALLOW.value,
                                                                 Verdict.DENY.value),
                         "reason": reason}, columns=_VERDICT_COLS), gross_after


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


Witness = Callable[[], "str | None"]


def load_state(path: Path, now: dt.datetime, witness: Witness | None = None, loud: bool = True) -> tuple[
        KillSwitchState, list[KillSwitchEvent], str]:
    """(state, events, how) with ``how`` one of ``ok``, ``corrupt``, ``missing`` (armed, file gone) and
    ``unarmed``. A file that cannot be read or parsed → HALTED / STATE_CORRUPT. No file: if ``witness()``
    names evidence that the switch was armed → HALTED / STATE_MISSING; else HALTED / NOT_ARMED (never
    persisted by the caller). Every failing-closed case is said loudly in an event."""
    if not path.exists():
        evidence = witness() if witness is not None else None
        if evidence:
            detail = (f"kill switch state file {path} is missing but the switch was armed ({evidence}); "
                      "FAILING CLOSED: HALTED until a person inspects it and runs `reset --reason ...`")
            reason, how = TripReason.STATE_MISSING, "missing"
        else:
            detail = (f"kill switch never armed (no state file {path}, no trace of trading): every order is "
                      "denied until `tradegraph kill-switch init`")
            reason, how = TripReason.NOT_ARMED, "unarmed"
        state = KillSwitchState(trips={reason: Trip(reason, TradingState.HALTED, now, detail=detail)}, updated_at=now)
        if loud:
            log.error(detail)
        return state, [KillSwitchEvent(now, "state_file", None, None, "TRIP", detail, "?->HALTED")], how
    try:
        return state_from_dict(read_json(path)), [], "ok"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = (f"kill switch state file {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                  "FAILING CLOSED: HALTED until a person inspects it and runs `reset --reason ...`")
        state = KillSwitchState(trips={TripReason.STATE_CORRUPT: Trip(
            TripReason.STATE_CORRUPT, TradingState.HALTED, now, detail=detail)}, updated_at=now)
        log.error(detail)
        return state, [KillSwitchEvent(now, "state_file", None, None, "TRIP", detail, "?->HALTED")], "corrupt"


class KillSwitch:
    """The file-backed kill switch: each operation locks the state file (``fcntl``, so a manual trip from
    the CLI is never lost to a concurrent run), loads it (fail closed), applies one pure function, saves
    it with ``write_atomic_json`` and returns the :class:`CheckResult`. A corrupt file is kept beside the
    state as ``<name>.corrupt`` for inspection before it is replaced by the HALTED state. ``witness``
    (see :func:`load_state`) is asked only when the state file is missing."""

    def __init__(self, path: str | Path | None = None, limits: Limits | None = None,
                 witness: Witness | None = None) -> None:
        self.path = Path(path) if path is not None else resolve_path("paths.kill_switch_state")
        self._limits = limits
        self.witness = witness

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

    def _transact(self, now: dt.datetime, op: Callable[[KillSwitchState], CheckResult], *,
                  arms: bool = False) -> CheckResult:
        """Load, apply ``op``, save. A never-armed switch is saved only by an operation that ``arms`` it
        (a manual trip); any other result on it is returned but not written (it stays unarmed)."""
        with self._locked():
            state, events, how = load_state(self.path, now, self.witness)
            if how == "corrupt":
                shutil.copyfile(self.path, self.path.with_name(self.path.name + ".corrupt"))
            if how == "unarmed" and arms:
                state = replace(state, trips={})
            result = op(state)
            if how != "unarmed" or arms:
                write_atomic_json(self.path, state_to_dict(result.state))
        return replace(result, events=[*events, *result.events])

    def is_armed(self) -> bool:
        """The switch has a state file (any state), or a witness says it was armed."""
        return self.path.exists() or bool(self.witness and self.witness())

    def init(self, now: dt.datetime, reason: str = "first start") -> CheckResult:
        """Arm a switch that was never armed: a fresh ACTIVE state. Already armed: nothing changes (the
        current state is returned). A missing state file with a witness: :class:`KillSwitchError` (a
        deleted file is never re-armed silently; inspect, then ``reset`` with a reason)."""
        with self._locked():
            state, events, how = load_state(self.path, now, self.witness, loud=False)
            if how == "missing":
                raise KillSwitchError(f"{events[0].reason}; `init` does not re-arm it")
            if how in ("ok", "corrupt"):
                return CheckResult(state, [*events, KillSwitchEvent(now, "init", None, None, "SKIP",
                                                                     f"already armed ({self.path})")])
            fresh = KillSwitchState(updated_at=now)
            write_atomic_json(self.path, state_to_dict(fresh))
        return CheckResult(fresh, [KillSwitchEvent(now, "init", None, None, "INFO", f"armed: {reason}",
                                                   "NOT_ARMED->ACTIVE")])

    def status(self, now: dt.datetime) -> CheckResult:
        """The persisted state, read only (a corrupt file reads as HALTED / STATE_CORRUPT, a missing one as
        HALTED / STATE_MISSING or NOT_ARMED)."""
        with self._locked():
            state, events, _ = load_state(self.path, now, self.witness)
        return CheckResult(state, events)

    def pre_trade_check(self, orders: pd.DataFrame | Sequence[Any], **kwargs: Any) -> CheckResult:
        """See :func:`pre_trade_check` (every keyword but ``limits``)."""
        return self._transact(kwargs["now"], lambda s: pre_trade_check(s, orders, limits=self.limits, **kwargs))

    def record_broker_outcomes(self, outcomes: Sequence[bool], now: dt.datetime) -> CheckResult:
        return self._transact(now, lambda s: record_broker_outcomes(s, outcomes, now, limits=self.limits))

    def trip(self, reason: str, now: dt.datetime, target: TradingState = TradingState.HALTED) -> CheckResult:
        return self._transact(now, lambda s: trip(s, reason, now, limits=self.limits, target=target), arms=True)

    def reset(self, reason: str, now: dt.datetime, equity: float | None = None) -> CheckResult:
        """Clear every trip (a person decided). A never-armed switch is armed by ``init``, not a reset."""
        def op(s: KillSwitchState) -> CheckResult:
            if TripReason.NOT_ARMED in s.trips:
                raise KillSwitchError(f"the kill switch ({self.path}) was never armed: run "
                                      "`tradegraph kill-switch init` first")
            return reset(s, reason, now, limits=self.limits, equity=equity)
        return self._transact(now, op)

    def on_session_open(self, session_date: dt.date, equity: float, now: dt.datetime) -> CheckResult:
        return self._transact(now, lambda s: on_session_open(s, session_date, equity, now, limits=self.limits))
