"""The configuration schema: the type, range and choices of every key, and the rules between keys.

Why pydantic models: one declaration per key (``z_max: PosFloat``) replaces the old "same type as the
default" check, ``schema.yaml`` and hand-written cross checks, and a model's rules sit next to the keys
they relate. Values live only in ``CONFIG/defaults.yaml``: every field is required (no default here), so a
key missing from the defaults, or present there but not declared here, fails the load.

Adding a key = one line in its section's model below (plus its value in ``defaults.yaml``). The type is
the contract ``get_cfg`` keeps: ``int`` fields take ints only, ``float`` fields take ints too and store
them as floats, a bool is never a number nor a number a bool, a string is never coerced, and a float is
always finite (NaN and infinity are refused: they never mean anything here, and they are not JSON).

Every model is strict and forbids unknown keys. A cross-key rule is a ``@model_validator(mode="after")``
that calls :func:`require`; the model's docstring says why each rule holds. :mod:`CONFIG.config_loader`
turns every failure into one line ``config key 'section.key': ...``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

SESSION_MINUTES = 390  # a full regular US equity session (the features' bars_per_session; a definition)
RULE_ERROR = "config_rule"  # the error type of a broken cross-key rule (ctx: "failures" = [(key, why)])


def require(*rules: tuple[bool, str, str]) -> None:
    """Raise one error listing every broken rule; a rule is ``(holds, key, why)``, ``key`` relative to the
    model that checks it (``"gross_target"`` in ``Sizing``, ``"sizing.gross_target"`` at the root)."""
    failures = [(key, why) for holds, key, why in rules if not holds]
    if failures:
        raise PydanticCustomError(RULE_ERROR, "{text}", {
            "text": "; ".join(f"{key}: {why}" for key, why in failures), "failures": failures})


# --- value types -------------------------------------------------------------------------------------------

def _unique(values: Sequence[Any]) -> Sequence[Any]:
    dupes = sorted({v for v in values if list(values).count(v) > 1})
    if dupes:
        raise PydanticCustomError("duplicates", "duplicated values {dupes}", {"dupes": dupes})
    return values


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _iso_date(value: Any) -> Any:
    """A date (YAML parses an unquoted 2025-06-02 as one) or an ISO string → the ISO string (what
    ``get_cfg`` returns, hashes and JSON hold). A datetime is refused: a date key has no time of day."""
    if isinstance(value, dt.datetime):
        raise PydanticCustomError("date", "expected a date YYYY-MM-DD without a time of day")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError as exc:
            raise PydanticCustomError("date", "not a calendar date ({err})", {"err": str(exc)}) from None
    raise PydanticCustomError("date", "expected a date YYYY-MM-DD")


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("timezone", "not an IANA time zone name") from None
    return value


_OFFSET = re.compile(r"^(?:UTC)?[+-]\d{2}:\d{2}$", re.ASCII)


def _zone_or_offset(value: str) -> str:
    """``UTC``, an IANA name or a fixed offset ``±HH:MM`` (a vendor file's stamps may be any of these)."""
    if value.upper() in ("UTC", "Z", "GMT") or _OFFSET.match(value):
        return value
    return _timezone(value)


def _horizon_keys(value: Any) -> Any:
    """Horizon-keyed mappings: a JSON round trip turns the int keys into strings; bring them back."""
    if not isinstance(value, dict):
        return value
    out: dict = {}
    for key, v in value.items():
        k = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key
        if k in out:
            raise PydanticCustomError("duplicates", "horizon {key} given twice", {"key": k})
        out[k] = v
    return out


def one_of(*choices: int) -> Any:
    """An int among ``choices`` (``Literal`` would accept True for 1 and 5.0 for 5)."""
    def check(v: int) -> int:
        if v not in choices:
            raise PydanticCustomError("choice", "must be one of {choices}", {"choices": list(choices)})
        return v
    return Annotated[int, AfterValidator(check)]


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]          # [0, 1]
PosShare = Annotated[float, Field(gt=0, le=1)]       # (0, 1]
OpenShare = Annotated[float, Field(gt=0, lt=1)]      # (0, 1)
Text = Annotated[str, Field(min_length=1)]
IsoDate = Annotated[str, BeforeValidator(_iso_date)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
ZoneOrOffset = Annotated[str, AfterValidator(_zone_or_offset)]
Family = Literal["lightgbm", "sequential"]
BarMinutes = one_of(1, 5, 15, 60)


def nonempty_unique(item: Any) -> Any:
    """A list of at least one ``item``, each once."""
    return Annotated[list[item], Field(min_length=1), AfterValidator(_unique)]


class Section(BaseModel):
    """Strict, closed: unknown keys are errors, types are never coerced (except int → float)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


# --- sections ----------------------------------------------------------------------------------------------

class Engine(Section):
    strategy_id: Text
    mode: Literal["live", "audit", "replay"]
    allow_manual_live_runs: bool


class Paths(Section):
    var_dir: Text
    lineage_db: Text
    registry: Text
    paper_broker_db: Text
    replay_broker_db: Text
    kill_switch_state: Text
    launch_secret: Text
    reports: Text
    demo_lineage_db: Text
    demo_replay_broker_db: Text
    demo_kill_switch_state: Text
    bench: Text
    prediction_cache: Text


class MarketAlpaca(Section):
    """``market.source: alpaca``: the universe and the data requests (keys come from the environment)."""

    symbols: list[Text]
    symbols_file: Text | None
    feed: Literal["iex", "sip"]
    adjustment: Literal["raw", "split", "dividend", "all"]
    symbols_per_request: Annotated[int, Field(ge=1, le=1000)]
    timeout_seconds: PosFloat
    cache_dir: Text


class Market(Section):
    """Rule: ``partitions_start`` ≤ ``partitions_end`` (an empty span has no partition to run)."""

    source: Literal["simulator", "files", "vendor", "alpaca"]
    files_dir: Text | None
    files_timezone: ZoneOrOffset
    files_stamp: Literal["close", "open"]
    files_min_grid_share: PosShare
    files_min_coverage: Share
    adjustments_file: Text | None
    quote_tolerance_bps: NonNegFloat
    sanity_reference_rows: PosInt
    sanity_sigma_rows: Annotated[int, Field(ge=2)]
    jump_sigmas: PosFloat
    jump_floor: PosFloat
    split_ratios: nonempty_unique(PosFloat)
    split_tolerance: OpenShare
    level_shift_max_ratio: Annotated[float, Field(gt=1)]
    spread_estimator_bars: Annotated[int, Field(ge=2)]
    estimated_spread_floor_bps: PosFloat
    calendar: Text
    timezone: TimeZone
    bar_minutes: BarMinutes
    bar_alignment: Literal["clock", "session"]
    partitions_start: IsoDate
    partitions_end: IsoDate
    history_bars: Annotated[int, Field(ge=2)]
    stale_after_intervals: PosInt
    lock_retry_seconds: NonNegFloat
    alpaca: MarketAlpaca

    @model_validator(mode="after")
    def _rules(self) -> Market:
        require((self.partitions_start <= self.partitions_end, "partitions_start",
                 f"{self.partitions_start} is after market.partitions_end={self.partitions_end}"))
        return self


class Simulator(Section):
    """Rules: every ``*_min`` ≤ its ``*_max`` (the draws are uniform between them); ``market_share +
    sector_share`` ≤ 1 (they are shares of one variance: the idiosyncratic share 1 − m − s would be
    negative, and the simulator would silently clip it to 0)."""

    seed: NonNegInt
    n_symbols: Annotated[int, Field(ge=1, le=20000)]
    start_date: IsoDate
    price_min: PosFloat
    price_max: PosFloat
    daily_vol_min: OpenShare
    daily_vol_max: OpenShare
    market_beta_min: float
    market_beta_max: float
    market_share: Share
    sector_count: PosInt
    sector_share: Share
    u_shape_vol: Annotated[float, Field(gt=-1)]      # multiplier 1 + u·(2x−1)² must stay > 0
    u_shape_volume: Annotated[float, Field(gt=-1)]
    adv_min: Annotated[int, Field(gt=0)]
    adv_max: Annotated[int, Field(gt=0)]
    spread_bps_min: PosFloat
    spread_bps_max: PosFloat
    spread_vol_elasticity: float
    reversal_coefs: list[float]
    momentum_coef: float
    momentum_window: PosInt
    overnight_gap_vol: NonNegFloat
    jump_prob: Share
    jump_vol: NonNegFloat
    halt_prob: Share
    halt_bars_max: PosInt
    volume_noise: NonNegFloat
    spread_noise: NonNegFloat
    range_scale: NonNegFloat

    @model_validator(mode="after")
    def _rules(self) -> Simulator:
        pairs = ("price", "daily_vol", "market_beta", "adv", "spread_bps")
        require(*((getattr(self, f"{p}_min") <= getattr(self, f"{p}_max"), f"{p}_min",
                   f"{getattr(self, f'{p}_min')!r} is greater than simulator.{p}_max={getattr(self, f'{p}_max')!r}")
                  for p in pairs),
                (self.market_share + self.sector_share <= 1, "market_share",
                 f"{self.market_share!r} + simulator.sector_share={self.sector_share!r} is "
                 f"{self.market_share + self.sector_share:g}, above 1 (shares of one variance)"))
        return self


class Clock(Section):
    mode: Literal["wall", "accelerated"]
    speed: PosFloat
    file: Text


class Features(Section):
    """Lists are non-empty (the lookback is their maximum) and without duplicates (a duplicate would make
    two features of one name)."""

    version: Text
    return_lookbacks: nonempty_unique(PosInt)
    vol_windows: nonempty_unique(Annotated[int, Field(ge=2)])
    volume_window: Annotated[int, Field(ge=2)]
    range_window: PosInt
    ewma_halflife_bars: Annotated[int, Field(gt=0)]
    ewma_window_bars: Annotated[int, Field(ge=2)]
    min_valid_share: PosShare
    adv_sessions: PosInt

    def lookback(self, bar_minutes: int) -> int:
        """Bars before t that a feature of t reads (the overnight gap reaches back a whole session): the same
        formula as ``FeatureParams.lookback`` in ``assets/features/logic.py`` (CONFIG does not import the
        assets; a test keeps them equal)."""
        return max(max(self.return_lookbacks), max(self.vol_windows), self.volume_window, self.range_window,
                   self.ewma_window_bars, SESSION_MINUTES // bar_minutes)


class Horizons(Section):
    """``minutes``: at least one horizon, each once (a duplicate would train and blend one twice)."""

    minutes: nonempty_unique(PosInt)


class Barrier(Section):
    horizon_minutes: PosInt
    width_sigma: PosFloat
    neutral_prior: Share


class LightGBM(Section):
    n_estimators: PosInt
    learning_rate: PosFloat
    num_leaves: Annotated[int, Field(ge=2)]
    min_child_samples: PosInt
    subsample: PosShare
    colsample: PosShare
    early_stopping_rounds: PosInt


class Sequential(Section):
    window: Annotated[int, Field(ge=2)]
    hidden: PosInt
    epochs: PosInt
    batch_size: PosInt
    learning_rate: PosFloat
    patience: PosInt
    input_clip: PosFloat
    max_train_rows: PosInt
    max_valid_rows: PosInt


class BarrierLightGBM(Section):
    n_estimators: PosInt
    learning_rate: PosFloat
    num_leaves: Annotated[int, Field(ge=2)]
    min_child_samples: PosInt
    early_stopping_rounds: PosInt


class Training(Section):
    """``families``: at least one return family, each once (no family at all would mean no alpha, ever)."""

    families: nonempty_unique(Family)
    train_barrier: bool
    train_sessions: Annotated[int, Field(ge=2)]
    train_end: IsoDate
    validation_share: OpenShare
    seed: NonNegInt
    threads: PosInt
    ic_min_symbols: Annotated[int, Field(ge=2)]
    min_validation_ic: Annotated[float, Field(ge=-1, le=1)]
    lightgbm: LightGBM
    sequential: Sequential
    barrier_lightgbm: BarrierLightGBM


class Prediction(Section):
    seq_gap_tolerance_bars: NonNegInt


class Standardization(Section):
    window_bars: PosInt
    clip: PosFloat
    min_history: Annotated[int, Field(ge=2)]


class Blending(Section):
    """``temperature`` is an open mapping, horizon minutes (a positive int; a digit string from a JSON round
    trip is read as the int) → T in (0, 1]. Its keys need not be configured horizons: a merge cannot delete
    a default key, so a user who drops horizon 15 must not be forced to drop its temperature."""

    ridge_lambda: NonNegFloat
    cost_penalty: NonNegFloat
    mu_floor: NonNegFloat
    ic_window_bars: Annotated[int, Field(ge=2)]
    ic_prior_bars: NonNegInt
    temperature: Annotated[dict[PosInt, PosShare], BeforeValidator(_horizon_keys)]


class Arbitration(Section):
    """Rules (SPEC §4.3, winner-takes-most): ``winner_share + runner_up_share`` ≤ 1 (the final score is a
    share-weighted sum of nets: shares above 1 in total would inflate it past the winner's own net) and
    ``winner_share`` ≥ ``runner_up_share`` (else the runner-up takes most)."""

    mode: Literal["winner", "softmax"]
    k1_spread: NonNegFloat
    k2_vol: NonNegFloat
    k3_impact: NonNegFloat
    impact_y: NonNegFloat
    impact_ref_weight: PosShare | None               # null → sizing.max_weight
    winner_share: Share
    runner_up_share: Share
    softmax_beta: PosFloat
    reserve_base_bps: NonNegFloat
    reserve_spread_mult: NonNegFloat

    @model_validator(mode="after")
    def _rules(self) -> Arbitration:
        total = self.winner_share + self.runner_up_share
        require((total <= 1, "winner_share",
                 f"{self.winner_share!r} + arbitration.runner_up_share={self.runner_up_share!r} is {total:g}, above 1"),
                (self.winner_share >= self.runner_up_share, "runner_up_share",
                 f"{self.runner_up_share!r} is above arbitration.winner_share={self.winner_share!r} "
                 "(winner-takes-most)"))
        return self


class Gating(Section):
    """Rules (SPEC §4.4 defaults: prefer 0.55 < block 0.60 < exit 0.65), equality allowed:

    - ``prefer_threshold`` ≤ ``block_threshold``: preferring an entry on a barrier probability the block
      rule would not even tolerate against it inverts the gate's caution;
    - ``exit_threshold`` ≥ ``block_threshold``: with exit below block, a P(against) between the two lets a
      new entry in that the next bar exits, so the engine would churn in and out paying costs both ways.
    """

    block_threshold: Share
    prefer_threshold: Share
    exit_threshold: Share
    spread_max_bps: PosFloat
    quote_age_max_bars: NonNegInt
    allow_estimated_spread: bool

    @model_validator(mode="after")
    def _rules(self) -> Gating:
        require((self.prefer_threshold <= self.block_threshold, "prefer_threshold",
                 f"{self.prefer_threshold!r} is above gating.block_threshold={self.block_threshold!r}"),
                (self.exit_threshold >= self.block_threshold, "exit_threshold",
                 f"{self.exit_threshold!r} is below gating.block_threshold={self.block_threshold!r} "
                 "(entries allowed that the next bar exits)"))
        return self


class Sizing(Section):
    """Rule: ``no_trade_band`` < ``max_weight``: a target weight is at most ``max_weight`` (SPEC §4.5), so
    a band that wide bands every entry away and the engine never opens a position."""

    z_window_bars: PosInt
    z_max: PosFloat
    max_weight: PosShare
    max_position_pct: PosShare
    name_risk_budget: PosFloat
    participation_beta: PosShare
    no_trade_band: NonNegFloat
    gross_target: PosFloat
    gross_mode: Literal["cap", "target"]
    lot_size: PosInt

    @model_validator(mode="after")
    def _rules(self) -> Sizing:
        require((self.no_trade_band < self.max_weight, "no_trade_band",
                 f"{self.no_trade_band!r} is not below sizing.max_weight={self.max_weight!r} (no entry could trade)"))
        return self


class BrokerAlpaca(Section):
    """The Alpaca HTTP transport (trading API; ``market.source: alpaca`` uses it too)."""

    rate_limit_retries: Annotated[int, Field(ge=0, le=20)]
    rate_limit_max_wait_seconds: PosFloat
    server_error_retries: Annotated[int, Field(ge=0, le=10)]
    retry_backoff_seconds: NonNegFloat


class BrokerIbkr(Section):
    """TWS / IB Gateway connection (the login lives there; no secret here)."""

    host: Text
    port: Annotated[int, Field(ge=1, le=65535)]
    client_id: NonNegInt
    account: str
    exchange: Text
    currency: Text
    connect_timeout_seconds: PosFloat
    reconnect_attempts: Annotated[int, Field(ge=0, le=50)]
    reconnect_backoff_seconds: NonNegFloat
    reconnect_backoff_max_seconds: NonNegFloat


class Broker(Section):
    kind: Literal["paper", "alpaca", "ibkr"]
    live_money: bool
    initial_cash: PosFloat
    fee_bps: NonNegFloat
    impact_y: NonNegFloat
    participation_cap: PosShare
    partial_remainder: Literal["cancel", "carry"]
    fill_latency_bars: Annotated[int, Field(ge=0, le=12)]
    qty_decimals: Annotated[int, Field(ge=0, le=9)]
    submit_timeout_seconds: PosFloat
    allow_fractional: bool
    alpaca: BrokerAlpaca
    ibkr: BrokerIbkr


class Execution(Section):
    """Session rules: flatten on the bar before the close, with market or market-on-close orders."""

    flatten_before_close: bool
    close_order_type: Literal["market", "moc"]


class KillSwitch(Section):
    """Rule: ``daily_loss_pct`` ≤ ``drawdown_pct``: the start-of-day equity never exceeds the high-water
    mark, so a daily loss of x is a drawdown of at least x; a larger daily limit could only trip after the
    drawdown limit had already halted (with a manual reset), i.e. it would never act."""

    daily_loss_pct: OpenShare
    drawdown_pct: OpenShare
    gross_exposure_max: PosFloat
    max_order_notional: PosFloat
    max_orders_per_bar: PosInt
    stale_bars: PosInt
    min_fresh_share: Share
    broker_error_limit: PosInt
    reconciliation_tolerance_shares: NonNegFloat
    flatten_on_halt: bool
    on_reconciliation_mismatch: Literal["halt", "reducing", "record"]

    @model_validator(mode="after")
    def _rules(self) -> KillSwitch:
        require((self.daily_loss_pct <= self.drawdown_pct, "daily_loss_pct",
                 f"{self.daily_loss_pct!r} is above kill_switch.drawdown_pct={self.drawdown_pct!r} (it could never trip first)"))
        return self


class Orchestration(Section):
    """``max_concurrent_trading_runs`` is at most 1: SPEC §7 serialises trading runs so orders and the one
    DuckDB writer never race."""

    sensor_interval_seconds: PosInt
    sensor_autostart: bool
    max_concurrent_trading_runs: Annotated[int, Field(ge=1, le=1)]
    ui_port: Annotated[int, Field(ge=1, le=65535)]
    preopen_minutes: NonNegInt
    postclose_minutes: NonNegInt


class Replay(Section):
    start: IsoDate
    sessions: PosInt
    dagster_bars: NonNegInt
    flush_bars: PosInt
    batch_bars: PosInt


class Report(Section):
    """The period report (``tradegraph report``, ``make demo``)."""

    min_sessions: PosInt


class Alerts(Section):
    """Alert destinations (apprise URLs; secret ones in ``config_file``, which is never recorded)."""

    urls: list[Text]
    config_file: Text | None
    timeout_seconds: Annotated[float, Field(gt=0, le=120)]
    poll_seconds: PosInt
    state_file: Text


class Metrics(Section):
    """The Prometheus exporter (multiprocess files under ``dir``)."""

    enabled: bool
    dir: Text
    host: Text
    port: Annotated[int, Field(ge=1, le=65535)]
    latency_buckets: nonempty_unique(PosFloat)


class Instance(Section):
    """The Dagster instance ``make ui`` writes: run storage on SQLite files or PostgreSQL."""

    storage: Literal["sqlite", "postgres"]
    postgres_url_env: Text


# --- the whole configuration -------------------------------------------------------------------------------

class TradegraphConfig(Section):
    """Every section, and the rules between sections:

    - every ``horizons.minutes`` and ``barrier.horizon_minutes`` is a whole multiple of
      ``market.bar_minutes`` (a horizon is a number of bars);
    - ``market.history_bars`` ≥ the feature lookback + 1 (the features of a bar read ``lookback + 1``
      bars, ``assets/features/logic.py``), and ≥ lookback + ``training.sequential.window`` when the
      sequential family is configured: its window rebuilds the features of the last T bars, the oldest of
      which reads ``lookback + 1`` bars ending T − 1 bars before the current one
      (``assets/predictions/stage.py::seq_buffer_for``; measured: 60 bars fill T = 12 with lookback 48,
      59 fail);
    - ``sizing.gross_target`` ≤ ``kill_switch.gross_exposure_max`` (else sizing aims at a book the kill
      switch trips on);
    - ``kill_switch.stale_bars`` ≥ ``market.stale_after_intervals`` (else the sensor requests bars the kill
      switch halts on as stale, and a stale-data halt needs a manual reset);
    (``replay.start`` is the demo's period only: ``make demo`` checks that it lies inside the partitions and
    after ``training.train_end``, so a desk's own files need not move it);
    - with ``market.source: simulator``: ``simulator.start_date`` ≤ ``market.partitions_start`` (no
      partition before the simulated market begins) and < ``training.train_end`` (training needs simulated
      sessions before its end). (Fewer names than ``training.ic_min_symbols`` is not refused here: training
      explains the undefined validation IC and does not activate such a model, whatever the source.)
    """

    engine: Engine
    paths: Paths
    market: Market
    simulator: Simulator
    clock: Clock
    features: Features
    horizons: Horizons
    barrier: Barrier
    training: Training
    prediction: Prediction
    standardization: Standardization
    blending: Blending
    arbitration: Arbitration
    gating: Gating
    sizing: Sizing
    broker: Broker
    execution: Execution
    kill_switch: KillSwitch
    orchestration: Orchestration
    replay: Replay
    report: Report
    alerts: Alerts
    metrics: Metrics
    instance: Instance

    def history_need(self) -> int:
        """Bars of history the features (and the sequential window, when configured) need."""
        lookback = self.features.lookback(self.market.bar_minutes)
        if "sequential" in self.training.families:
            return lookback + self.training.sequential.window
        return lookback + 1

    @model_validator(mode="after")
    def _rules(self) -> TradegraphConfig:
        bar, mk, sim, tr = self.market.bar_minutes, self.market, self.simulator, self.training
        off = [h for h in self.horizons.minutes if h % bar]
        need = self.history_need()
        window = (f" + training.sequential.window={tr.sequential.window}" if "sequential" in tr.families
                  else " + 1")
        simulated = mk.source == "simulator"
        require(
            (not off, "horizons.minutes", f"{off} are not multiples of market.bar_minutes={bar}"),
            (self.barrier.horizon_minutes % bar == 0, "barrier.horizon_minutes",
             f"{self.barrier.horizon_minutes} is not a multiple of market.bar_minutes={bar}"),
            (mk.history_bars >= need, "market.history_bars",
             f"{mk.history_bars} is below the {need} bars the features need (lookback "
             f"{self.features.lookback(bar)} of features.return_lookbacks/vol_windows/volume_window/range_window/"
             f"ewma_window_bars/a session of market.bar_minutes={bar}{window})"),
            (self.sizing.gross_target <= self.kill_switch.gross_exposure_max, "sizing.gross_target",
             f"{self.sizing.gross_target!r} is above kill_switch.gross_exposure_max="
             f"{self.kill_switch.gross_exposure_max!r}"),
            (self.kill_switch.stale_bars >= mk.stale_after_intervals, "kill_switch.stale_bars",
             f"{self.kill_switch.stale_bars} is below market.stale_after_intervals={mk.stale_after_intervals} "
             "(the sensor would request bars the kill switch halts on)"),
            (not simulated or sim.start_date <= mk.partitions_start, "simulator.start_date",
             f"{sim.start_date} is after market.partitions_start={mk.partitions_start} (market.source=simulator)"),
            (not simulated or sim.start_date < tr.train_end, "simulator.start_date",
             f"{sim.start_date} is not before training.train_end={tr.train_end} (market.source=simulator)"),
        )
        return self
