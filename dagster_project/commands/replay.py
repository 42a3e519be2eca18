"""Replay: many bars through the same pure stage functions in one process, with the replay paper account.

No Dagster run per bar: the loop calls exactly what each asset calls (``compute_*`` of every stage), keeps
the history the stages need in memory, trades the replay paper account (``paths.replay_broker_db``) on a
simulated clock (now = the bar close) under the replay account's own kill switch, and writes the same
lineage tables as the Dagster path, so ``explain`` and ``audit`` work on replayed bars too. For the same bars,
models and configuration it produces the same ``sized_orders`` and ``executions`` as the Dagster graph run in
``replay`` mode (tested). Bars, features, model outputs and the signal stages (predictions, model_skill,
blended_alpha: none depends on the account) are computed for ``replay.batch_bars`` consecutive bars at once
(:meth:`ReplayEngine.prepare`: the functions the assets call with one bar, same bits), the rest bar by bar.

The paper account and the kill switch are held in memory for the whole replay (the same venue rules and
kill-switch functions as the file-backed ones: ``resources.brokers.paper_book``, ``resources.kill_switch.
memory``): a recording engine loads the account file when it is made, before the models (a second replay in
the same home stops there with :class:`AccountInUse`), and keeps it locked until :meth:`ReplayEngine.close`.
Lineage is written in bulk: every ``replay.flush_bars`` bars to the replay's own staging file, and at the end
into the lineage file in one transaction (each table as whole compressed row groups). At each flush the
staging transaction commits first, then the account and the switch are written to their files, so the staged
lineage is never behind the account (a fill the account holds is always in lineage), and the staging file
knows which account it belongs to:

* the replay ends: what is pending is flushed and the staging file moved into the lineage file;
* an exception (or Ctrl-C) in a bar: :meth:`ReplayEngine.abort` drops the bars since the last flush, moves
  what was staged into the lineage file, and writes nothing else: the three files stay at the last flush, the
  bars since are replayed again next time (interrupted between the staging commit and the account's save, it
  saves the account first);
* a killed process leaves the account and switch at its last flush and the staged bars in the staging file
  (:attr:`ReplayEngine.staging_path`), not in the lineage file: the next replay on that account moves that file
  in before it reads lineage (:func:`recover_staged`), so the three agree again. Killed between the staging
  commit and the account's save, the staging file holds one flush the account never saved: recovery drops
  those bars from it first (its ``runs`` row of the first one says so) and they are replayed again. (Before,
  the account was saved first; killed in between — during the whole lineage write — it was one flush ahead,
  holding fills lineage never recorded, and the next replay halted on a reconciliation mismatch.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from assets.arbitrated_scores.stage import compute_arbitrated
from assets.blended_alpha.stage import compute_blended_alpha_batch
from assets.execution_record import MemoryRecord, pnl_fills
from assets.executions.stage import execute, fresh_share
from assets.features.logic import features_for_windows
from assets.gated_signals.stage import compute_gated
from assets.history import LineageHistory, MemoryHistory, PredictionGrid
from assets.model_skill.stage import compute_model_skill_batch
from assets.pnl.stage import compute_pnl, est_costs, previous_book, start_of_bar
from assets.positions.stage import marks_from, positions_step, window_marks
from assets.predictions.cache import PredictionCache
from assets.predictions.models import ModelSet, load_models
from assets.predictions.stage import compute_predictions_batch, needs_sequence, prepare_predictions
from assets.sized_orders.stage import cancels_working_orders, compute_sized, pending_of, session_phase
from assets.venue import quotes_provider
from CONFIG.config_loader import effective_config, effective_config_hash, get_cfg, resolve_path
from resources.brokers.paper import BarClock, PaperBroker
from resources.brokers.protocol import BrokerTimeout
from resources.kill_switch.resource import switch_for
from resources.lineage.io_manager import absorb_staged, record_batch
from resources.lineage.store import RUN_COLUMNS, STAGING_IDENTITY, LineageStore, forget_file, hold_connection
from resources.market.calendar import bar_keys, get_calendar, parse_bar_key
from resources.market.resource import MarketDataResource
from TRAINING.common.utils.code_version import code_version

_log = logging.getLogger(__name__)
ACCOUNT = "replay"
ORDER = ["bars", "features", "predictions", "model_skill", "blended_alpha", "positions", "arbitrated_scores",
         "gated_signals", "sized_orders", "executions", "pnl"]
UPSTREAM = {  # the graph's edges (checked against the Dagster asset graph in tests)
    "bars": [], "features": ["bars"], "predictions": ["bars", "features"],
    "model_skill": ["bars", "features", "predictions"], "blended_alpha": ["model_skill", "predictions"],
    "positions": ["bars", "features"], "arbitrated_scores": ["blended_alpha", "features", "positions"],
    "gated_signals": ["arbitrated_scores", "positions", "predictions"],
    "sized_orders": ["features", "gated_signals", "positions"],
    "executions": ["bars", "features", "positions", "sized_orders"],
    "pnl": ["arbitrated_scores", "bars", "executions", "positions"],
}


# ``--lineage-mode summary``: the bar-level record only (what sweeps need: P&L, the account, the kill switch, what
# was refused, every fill); ``full`` writes every table of every asset
SUMMARY_TABLES = frozenset({"pnl", "positions_account", "executions_killswitch", "executions_refusals",
                            "positions_fills", "executions_fills"})
LINEAGE_MODES = ("full", "summary")


class AccountAhead(LookupError):
    """The replay account has already settled the period's first bar: replaying it again would settle nothing
    up to that point (a past bar is never settled twice), fill new orders late and find the earlier replay's
    orders under the same client ids — silently wrong numbers."""


class AccountInUse(LookupError):
    """The replay account's file is held by another process (another replay in the same home, say): two
    replays trading one account would each settle and fill against a book the other changes."""


class KillSwitchNotArmed(LookupError):
    """The replay account's kill switch was never armed: every order would be denied."""


class ReplayHistory:
    """Memory first (bars this replay produced); bars from before the replay are read from the lineage file
    once and then kept (past bars are immutable), so the loop does not query DuckDB bar after bar."""

    def __init__(self, memory: MemoryHistory, lineage: LineageHistory):
        self.memory, self.lineage = memory, lineage
        self._loaded: set[str] = set()

    def _ensure(self, bars: list[str]) -> None:
        missing = [b for b in bars if b not in self.memory._pred and b not in self._loaded]
        if not missing:
            return
        preds, sized = self.lineage.predictions(missing), self.lineage.sizing_raw(missing)
        for bar in missing:
            p, s = preds[preds["bar"] == bar], sized[sized["bar"] == bar]
            if len(p) or len(s):
                self.memory.add(bar, p.drop(columns="bar"), s.drop(columns="bar"))
        self._loaded.update(missing)

    def predictions(self, bars: list[str]) -> pd.DataFrame:
        self._ensure(bars)
        return self.memory.predictions(bars)

    def prediction_grid(self, bars: list[str]) -> PredictionGrid:
        self._ensure(bars)
        return self.memory.prediction_grid(bars)

    def sizing_raw(self, bars: list[str]) -> pd.DataFrame:
        self._ensure(bars)
        return self.memory.sizing_raw(bars)


@dataclass
class ReplayResult:
    run_id: str
    bars: list[str]
    seconds: float
    orders: int = 0
    fills: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0          # model calls served by the prediction cache
    cache_misses: int = 0        # model calls computed (and cached)
    batch_fallbacks: list[str] = field(default_factory=list)   # batches prepared bar by bar, with the reason
    switch_state: str = "ACTIVE"  # the replay kill switch's state at the end
    switch_trips: list[str] = field(default_factory=list)   # why it is not ACTIVE (reason: detail, since when)


class ReplayEngine:
    """One long-lived process trading the replay account bar after bar on the same stage functions."""

    def __init__(self, store: LineageStore | None = None, models: ModelSet | None = None, record: bool = True,
                 lineage: str = "full", prediction_cache: PredictionCache | None | bool = True):
        """``lineage``: ``full`` (every table) or ``summary`` (:data:`SUMMARY_TABLES`); ``prediction_cache``:
        True = the shared one under ``paths.prediction_cache``, False/None = none, or a cache to use."""
        if lineage not in LINEAGE_MODES:
            raise ValueError(f"lineage must be one of {LINEAGE_MODES}, got {lineage!r}")
        self.store = store or LineageStore()
        self.recording = record
        self.keep = None if lineage == "full" else SUMMARY_TABLES
        if prediction_cache is True:
            prediction_cache = PredictionCache(resolve_path("paths.prediction_cache"))
        self.cache = prediction_cache or None
        self.run_id = f"replay-{uuid.uuid4().hex[:12]}"
        self.clock = BarClock()
        self.broker: PaperBroker | None = None
        if record:   # claim the account before the models load: a second replay in this home stops at once
            self._venue()
        try:
            self.market = MarketDataResource()
            self.models = models or load_models()
        except BaseException:
            self._release()
            raise
        keep = max(get_cfg("blending.ic_window_bars") + max(get_cfg("horizons.minutes")) // get_cfg(
            "market.bar_minutes"), get_cfg("standardization.window_bars"), get_cfg("sizing.z_window_bars")) + 1
        self.history = ReplayHistory(MemoryHistory(keep), LineageHistory(self.store))
        self.switch = switch_for(ACCOUNT, held=True)   # state in memory; written with the account
        # before the record is read from lineage; what a killed replay staged past its account's last save is
        # dropped first (the account is loaded: ``_venue`` above)
        self.recovered = recover_staged(self.store, _account_db(), self._settled_through()) if record else []
        self.record = MemoryRecord.from_lineage(self.store, ACCOUNT)
        self._book = None
        self._pending: list[tuple[str, dict[str, object], dt.datetime]] = []
        self._staged_ahead = False   # staged bars the account's file does not hold yet (inside a flush)
        self._flushed_last: str | None = None   # the last bar staged by a committed flush
        self._staging: tuple[LineageStore, contextlib.ExitStack] | None = None
        self._staged_config: tuple[LineageStore, str] | None = None   # (staging store, config hash committed there)
        self.timing: dict[str, float] = {}
        self.realised: list = []   # each bar's nonzero per-symbol realised P&L (the hit rate without lineage)
        self._prepared: dict[str, tuple] = {}   # bar → (window, features, predictions, skill, blended) of prepare()
        self.batch_fallbacks: list[str] = []    # batches prepared bar by bar instead, with the reason

    def _previous_pnl(self, bar: str):
        if self._book is not None:
            return self._book
        from assets.pnl.asset import recorded_previous

        row, book = recorded_previous(self.store, ACCOUNT, bar)
        return previous_book(row, book)

    def _last_marks(self, bar: str) -> pd.Series:
        """The P&L book's last marks (what the positions asset reads from lineage as its fallback)."""
        previous = self._previous_pnl(bar)
        if previous is None:
            return pd.Series(dtype=float)
        book = previous[0].positions
        return pd.Series(book["mark"].to_numpy(dtype=float), index=book.index.to_numpy(), dtype=float)

    def _venue(self) -> PaperBroker:
        """The replay paper account, loaded into memory from its file (locked from now until the close)."""
        if self.broker is None:
            path = resolve_path("paths.replay_broker_db")
            try:
                self.broker = PaperBroker.in_memory(path, clock=self.clock)
            except BrokerTimeout as exc:
                raise AccountInUse(f"the replay account {path} is in use by another process (a replay already "
                                   "running in this home?): wait for it to finish, or replay in another home "
                                   f"(TRADEGRAPH_HOME=…). {exc}") from exc
        return self.broker

    def _settled_through(self) -> pd.Timestamp | None:
        """The replay account's last settled bar (its file's, until this replay steps a bar), in UTC."""
        through = self._venue().book.settle_state()[0]
        return None if through is None else pd.Timestamp(through, tz="UTC")

    def _check_period(self, bars: list[str]) -> None:
        """Refuse a period whose first bar the replay account has already settled (:class:`AccountAhead`)."""
        if not bars:
            return
        through = self._settled_through()
        if through is not None and parse_bar_key(bars[0]) <= through:
            path = resolve_path("paths.replay_broker_db")
            self._release()
            raise AccountAhead(
                f"the replay account {path} has already traded through {through:%Y-%m-%d %H:%M}Z; "
                f"replaying from {bars[0]} into it would give wrong numbers. Replay a later period, or start "
                f"a fresh replay account: another home (TRADEGRAPH_HOME=…, or TRADEGRAPH__PATHS__REPLAY_BROKER_DB "
                f"and TRADEGRAPH__PATHS__KILL_SWITCH_STATE), or delete {path} and the replay kill switch's state "
                f"file, then `tradegraph kill-switch init --account replay`. To finish an interrupted replay of "
                f"this period, run it again with --resume")

    def _save_state(self) -> None:
        """Write the kill switch and the paper account to their files (what changed since the last save).

        The switch first: killed between the two, the switch is ahead of the account (its high-water mark,
        trips and day baselines from bars the account replays again, which give the same state again: the
        functions are deterministic), never behind it (a missed trip or a lower high-water mark: failing open)."""
        self.switch.save()
        if self.broker is not None:
            self.broker.save()

    def _timed(self, name: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.timing[name] = self.timing.get(name, 0.0) + time.perf_counter() - t
        return out

    def prepare(self, bars: list[str]) -> None:
        """Bars, features, model outputs, predictions, model_skill and blended_alpha of consecutive bars at once
        (issue 12): one read of the period (``MarketDataResource.windows``), one feature block, each model
        called once for all of them, then the signal stages over the whole batch (none of them depends on
        positions, fills or the account: bar t's standardization and skill read only the bars before it, the
        batch's earlier bars included). The same functions the assets call with one bar, so every output is
        the same bits; :meth:`step` looks them up and runs the rest bar by bar."""
        windows = [w for w, _ in self._timed("bars", self.market.windows, bars)]
        T = needs_sequence(self.models)
        feats = self._timed("features", features_for_windows, windows, None, T or 0)
        frames = [f for f, _ in feats]
        prepared = self._timed("predictions", prepare_predictions, windows, frames, self.models,
                               self.cache, None, [h for _, h in feats])
        preds = self._timed("predictions", compute_predictions_batch, windows, frames, self.models, self.history,
                            None, prepared)
        skill = self._timed("model_skill", compute_model_skill_batch, windows, frames,
                            [p["predictions"] for p in preds], self.models, self.history)
        blended = self._timed("blended_alpha", compute_blended_alpha_batch, [p["predictions"] for p in preds],
                              [s["model_skill"] for s in skill], [s["model_skill_sigma"] for s in skill], self.models)
        for bar, window, frame, p, s, b in zip(bars, windows, frames, preds, skill, blended, strict=True):
            self._prepared[bar] = (window, frame, p, s, b)

    def _prepare_batch(self, bars: list[str]) -> None:
        """:meth:`prepare` for a batch; when it fails (bad data in one bar of it, say) the batch's bars are
        prepared one by one in :meth:`step`, so an error surfaces at its own bar after the bars before it were
        traded and recorded, as without batching. The fallback is kept with its reason (``batch_fallbacks``)."""
        self._prepared.clear()
        try:
            self.prepare(bars)
        except Exception as exc:  # noqa: BLE001 — re-raised by the per-bar path at the bar that causes it
            self._prepared.clear()
            self.batch_fallbacks.append(f"{bars[0]}…{bars[-1]}: {type(exc).__name__}: {exc}")
            _log.warning("replay: batch %s prepared bar by bar", self.batch_fallbacks[-1])

    def step(self, bar: str) -> dict[str, object]:
        """Every stage of one bar, in graph order; returns each asset's output."""
        ts = parse_bar_key(bar)
        session = get_calendar().session_of(ts)
        if bar not in self._prepared:
            self.prepare([bar])
        window, features, preds, skill, blended = self._prepared.pop(bar)
        broker = self._venue()
        broker.quotes = quotes_provider(window.snapshot, features)
        self.clock.set(ts.to_pydatetime())
        with broker.batch():
            marks = window_marks(window, self._last_marks(bar))
            positions = self._timed("positions", lambda: positions_step(
                broker, ts, window.snapshot, self.record, ACCOUNT, f"{get_cfg('broker.kind')}:{ACCOUNT}",
                marks=marks, actions=window.adjustments))
            pv = float(positions["positions_account"]["portfolio_value"].iloc[0])
            arb = self._timed("arbitrated_scores", compute_arbitrated, blended["blended_alpha"], features, pv)
            gated = self._timed("gated_signals", compute_gated, arb["arbitrated_scores"],
                                preds["predictions_barrier"], positions["positions"])
            sized = self._timed("sized_orders", compute_sized, bar, gated, features, pv, self.history, None,
                                pending_of(positions))
            execs = self._timed("executions", execute, bar, ts.to_pydatetime(), ts.to_pydatetime(), sized,
                                positions, broker, self.switch, session, ACCOUNT, session_phase(bar) != "closing",
                                cancels_working_orders(bar), fresh_share(window.snapshot))
        book, sod, prev_session, fills, source = start_of_bar(
            self._previous_pnl(bar), positions,
            pnl_fills([positions["positions_fills"], execs["executions_fills"]]), execs["executions_fills"])
        new_book, pnl = self._timed("pnl", compute_pnl, fills, marks_from(window.snapshot),
                                    est_costs(arb["arbitrated_scores"]), book, sod, prev_session, session, ACCOUNT,
                                    source, window.adjustments)
        self._book = (new_book, float(pnl["pnl"]["start_of_day_equity"].iloc[0]), session.isoformat())
        realised = pnl["pnl_symbols"]["realised_pnl"].to_numpy(dtype=float)
        if (realised != 0).any():
            self.realised.append(realised[realised != 0])
        self.record.add_bar(bar, positions, sized, execs)
        self.history.memory.add(bar, preds["predictions"], sized)
        outputs = {"bars": window, "features": features, "predictions": preds, "model_skill": skill,
                   "blended_alpha": blended, "positions": positions, "arbitrated_scores": arb,
                   "gated_signals": gated, "sized_orders": sized, "executions": execs, "pnl": pnl}
        if self.recording:
            self._pending.append((bar, outputs, dt.datetime.now(dt.UTC)))
            if len(self._pending) >= get_cfg("replay.flush_bars"):
                self.flush()
        return outputs

    def flush(self) -> None:
        """Write the pending bars' lineage to this replay's staging file (one transaction; the staging file
        is the replay's own, so no reader waits on it). :meth:`close` moves the staging file into the
        lineage file in one bulk transaction: each table is then written as whole compressed row groups
        once, instead of one partial row group (and one checkpoint) per flush: 1,741 → 1,250 bytes per
        symbol-bar over 5 sessions × 100 symbols (issue 12)."""
        if not self._pending:
            return
        t = time.perf_counter()
        self._stage([(bar, started, started, "success") for bar, _, started in self._pending],
                    [(bar, asset, outputs[asset], UPSTREAM[asset]) for bar, outputs, _ in self._pending
                     for asset in ORDER])
        self._flushed_last = self._pending[-1][0]
        self._pending.clear()
        self.timing["lineage"] = self.timing.get("lineage", 0.0) + time.perf_counter() - t
        self._staged_ahead = True   # lineage first: until the account's save below, it holds bars the file does not
        self._save_state()
        self._staged_ahead = False

    def _stage(self, runs: list[tuple[str, dt.datetime, dt.datetime, str]], tables: list | None = None) -> None:
        """One transaction in the staging file: the configuration, these ``runs`` rows (bar, started, ended,
        status) and the lineage ``tables`` (:func:`record_batch` items); all of it or none."""
        stage = self._staging_store()
        config_hash = effective_config_hash()
        with stage.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                if self._staged_config is None or self._staged_config[0] is not stage or \
                        self._staged_config[1] != config_hash:   # once per staging file, not at every flush
                    stage.record_config(con, config_hash, effective_config())
                stage.replace_runs(con, pd.DataFrame(
                    [(self.run_id, bar, ACCOUNT, code_version(), config_hash, str(self.models.versions()),
                      started, ended, status) for bar, started, ended, status in runs], columns=RUN_COLUMNS))
                if tables:
                    record_batch(stage, con, self.run_id, tables, keep=self.keep)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        self._staged_config = (stage, config_hash)

    @property
    def staging_path(self) -> Path:
        """This replay's staging lineage file, next to the lineage file (left there only by a killed replay
        or a failed final write: its bars are then not in the lineage file)."""
        return self.store.path.parent / f".{self.store.path.stem}.{self.run_id}.staging.duckdb"

    def _staging_store(self) -> LineageStore:
        if self._staging is None:
            path = self.staging_path
            for stale in (path, path.with_name(path.name + ".wal")):
                stale.unlink(missing_ok=True)
            hold = contextlib.ExitStack()
            hold.enter_context(hold_connection(path))   # one connection for the replay's life
            stage = LineageStore(path)
            with stage.connect() as con:   # which file this is (moved in once) and whose account's bars it holds
                con.execute(f"CREATE TABLE {STAGING_IDENTITY} (staging_id VARCHAR, run_id VARCHAR, account_db VARCHAR)")
                con.execute(f"INSERT INTO {STAGING_IDENTITY} VALUES (?, ?, ?)",
                            [uuid.uuid4().hex, self.run_id, _account_db()])
            self._staging = (stage, hold)
        return self._staging[0]

    def _absorb(self) -> None:
        """Move the staging file into the lineage file (one transaction: all of this replay's bars or none)."""
        if self._staging is None:
            return
        t = time.perf_counter()
        stage, hold = self._staging
        hold.close()
        self._staging = None
        with self.store.connect() as con:
            absorb_staged(self.store, con, stage.path)
        forget_file(stage.path)
        for path in (stage.path, stage.path.with_name(stage.path.name + ".wal")):
            path.unlink(missing_ok=True)
        self.timing["lineage"] = self.timing.get("lineage", 0.0) + time.perf_counter() - t

    def close(self) -> None:
        """Write what is pending (the account and the kill switch, then the staged lineage), move the replay's
        lineage into the lineage file, save the new predictions to the cache and release the account's file."""
        try:
            self.flush()
            self._save_state()
            self._absorb()
            if self.cache is not None:
                self.cache.save()
        finally:
            self._release()

    def abort(self, bars: list[str] | None = None, error: BaseException | None = None) -> None:
        """A bar failed: drop the bars since the last flush; record the flushed ones (the account and the kill
        switch were saved with them, so the three stay at the same bar); keep the cached predictions (they
        depend on models and features only); release the account's and the staging file.

        Interrupted inside a flush after the staging commit but before the account's save (a Ctrl-C then), the
        staged bars are the ones the account in memory stands at: the account and switch are saved now. If that
        save fails too, the staging file is left where it is, not moved into lineage: the next replay on this
        account drops the bars the account never saved from it (:func:`recover_staged`).

        With the period's ``bars`` and the ``error``, the first of them not recorded gets a ``runs`` row saying
        the replay failed there and why (its status is what happened: the bars before say ``success``, this
        one ``failed: …``, and no later bar has a row)."""
        self._pending.clear()
        try:
            if self._staged_ahead:
                try:
                    self._save_state()
                    self._staged_ahead = False
                except Exception:  # noqa: BLE001 — the original error is what the caller must see
                    _log.exception("replay %s: the account could not be saved with its staged bars; the staging "
                                   "file %s is left for the next replay's recovery", self.run_id, self.staging_path)
                    return
            if bars and error is not None and self.recording:
                self._record_stop(bars, error)
            self._absorb()
            if self.cache is not None:
                self.cache.save()
        finally:
            self._release()

    def _record_stop(self, bars: list[str], error: BaseException) -> None:
        """The ``runs`` row of the bar where the replay stopped (see :meth:`abort`); a failure to write it is
        logged, never raised over the error that stopped the replay."""
        stopped = next((b for b in bars if self._flushed_last is None or b > self._flushed_last), None)
        if stopped is None:   # every bar was recorded: the failure came after them (the final write)
            return
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        status = f"failed: replay stopped at this bar ({why}); this bar and the later ones are not recorded"
        now = dt.datetime.now(dt.UTC)
        try:
            self._stage([(stopped, now, now, status[:1000])])
        except Exception:  # noqa: BLE001 — the original error is what the caller must see
            _log.exception("replay %s: could not record where it stopped (%s)", self.run_id, stopped)

    def _release(self) -> None:
        if self._staging is not None:   # the final write failed: release the staging file, keep it to inspect
            self._staging[1].close()
            self._staging = None
        if self.broker is not None:
            self.broker.close()
            self.broker = None

    def remaining(self, bars: list[str]) -> list[str]:
        """The bars of ``bars`` after the replay account's last settled bar: what is left of a period whose
        replay was interrupted (its account, kill switch and lineage stand at the same bar, :meth:`abort`)."""
        through = self._settled_through()
        return list(bars) if through is None else [b for b in bars if parse_bar_key(b) > through]

    def run(self, bars: list[str], progress: bool = False, resume: bool = False) -> ReplayResult:
        """Replay ``bars`` (consecutive, in order); ``resume``: only those after the account's last settled bar
        (:meth:`remaining`), to finish an interrupted replay of the same period."""
        if resume:
            bars = self.remaining(bars)
        if not self.switch.is_armed():
            raise KillSwitchNotArmed(f"the replay account's kill switch ({self.switch.path}) was never armed: "
                                     "every order would be denied; run `tradegraph kill-switch init --account replay`")
        self._check_period(bars)
        t0 = time.perf_counter()
        orders = fills = 0
        iterator = bars
        if progress:
            from tqdm import tqdm

            iterator = tqdm(bars, desc="replay", unit="bar")
        with setup_frozen():
            try:
                size = get_cfg("replay.batch_bars")
                for i, bar in enumerate(iterator):
                    if i % size == 0:
                        self._prepare_batch(list(bars[i:i + size]))
                    out = self.step(bar)
                    orders += int(out["sized_orders"]["has_order"].sum())
                    fills += len(out["positions"]["positions_fills"]) + len(out["executions"]["executions_fills"])
            except BaseException as exc:
                self.abort(list(bars), exc)
                raise
            self.close()
        hits, misses = (self.cache.hits, self.cache.misses) if self.cache is not None else (0, 0)
        state = self.switch.status(dt.datetime.now(dt.UTC)).state
        trips = [f"{t.reason} since {t.ts:%Y-%m-%d %H:%M}Z: {t.detail}" for _, t in sorted(state.trips.items())]
        return ReplayResult(self.run_id, list(bars), time.perf_counter() - t0, orders, fills, dict(self.timing),
                            hits, misses, list(self.batch_fallbacks), str(state.state), trips)


def _account_db() -> str:
    """The replay paper account's file, as a staging file records its owner."""
    return str(Path(resolve_path("paths.replay_broker_db")).resolve())


@contextlib.contextmanager
def setup_frozen():
    """Python's cyclic garbage collector skips what exists when the replay starts (models, the prediction
    cache, configuration, imported modules) until it ends: its full collections walked all of it again and
    again (5.5 s of two 23-s replays at 100 symbols in one process; CPU per bar of a 2-session replay, 3
    interleaved runs each at a load of 3.9–5.5: median 64.9 → 61.1 ms). ``gc.freeze`` after one collection:
    nothing alive then is garbage, so nothing is kept that would have been freed. No output changes (the
    collector frees memory; it decides nothing)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def recover_staged(store: LineageStore, account_db: str | None = None,
                   through: pd.Timestamp | None = None) -> list[Path]:
    """Move the staging files a killed replay left beside ``store``'s file into it (oldest first), so lineage
    catches up with the paper account and kill switch that replay saved at its last flush; returns them.

    With the replay account's file (``account_db``) and its last settled bar (``through``, None: it never
    settled one), a staging file of that account first loses the bars after ``through``: the replay was killed
    between their staging commit and the account's save, so the account never held them (:func:`drop_unsaved`);
    a staging file of another account is left alone (its bars would make this account's record wrong: that
    account's next replay moves it in). A file moved in before (killed before its removal) is removed with
    nothing inserted (``LineageStore.absorb``).

    A staging file still held by a running replay (the file is locked) is left alone, as is one whose move
    fails (the error is logged; it stays to inspect). Why at the next replay's start: a killed process runs no
    cleanup, and without its bars the next replay would find fills in the account for orders lineage never
    knew (foreign fills, a reconciliation mismatch)."""
    import duckdb

    moved = []
    for path in sorted(store.path.parent.glob(f".{store.path.stem}.replay-*.staging.duckdb"),
                       key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            if account_db is not None:
                owner = staging_owner(path)
                if owner is not None and owner != account_db:
                    _log.warning("replay staging file %s left alone: its bars are the replay account %s's, not "
                                 "this one's (%s); that account's next replay moves it in", path, owner, account_db)
                    continue
                dropped = drop_unsaved(path, account_db, through)
                if dropped:
                    _log.warning("replay staging file %s: %d bar(s) from %s dropped: the killed replay never saved "
                                 "its paper account with them", path, len(dropped), dropped[0])
            with store.connect() as con:
                moved_in = absorb_staged(store, con, path)
        except duckdb.IOException as exc:   # held by a replay still running
            _log.warning("replay staging file %s left alone (in use?): %s", path, exc)
            continue
        except duckdb.Error as exc:
            _log.error("replay staging file %s could not be moved into %s: %s", path, store.path, exc)
            continue
        forget_file(path)
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        if moved_in is None:
            _log.warning("removed %s: its bars were moved into %s before (the replay was killed before removing "
                         "it); nothing inserted", path, store.path)
        else:
            _log.warning("recovered the bars of a killed replay from %s", path)
        moved.append(path)
    return moved


def staging_owner(path: Path) -> str | None:
    """The replay account file whose bars the staging file ``path`` holds (None: a file from before staging
    files named it)."""
    stage = LineageStore(path)
    try:
        with stage.connect(read_only=True) as con:
            if not stage.has_table(con, STAGING_IDENTITY):
                return None
            row = con.execute(f"SELECT account_db FROM {STAGING_IDENTITY}").fetchone()
            return None if row is None else str(row[0])
    finally:
        forget_file(path)


def drop_unsaved(path: Path, account_db: str, through: pd.Timestamp | None) -> list[str]:
    """Drop from the staging file ``path`` the bars its replay's paper account (``account_db``) does not hold:
    those after ``through``, its last settled bar. The first dropped bar keeps its ``runs`` row, saying why;
    the others lose every row (they are replayed again). A staging file of another account, or written before
    staging files named theirs, is left as it is. Returns the dropped bars, in order (one transaction)."""
    stage = LineageStore(path)
    try:
        with stage.connect() as con:
            if not stage.has_table(con, STAGING_IDENTITY):
                return []
            owner = con.execute(f"SELECT account_db FROM {STAGING_IDENTITY}").fetchone()
            if owner is None or owner[0] != account_db or not stage.has_table(con, "runs"):
                return []
            bars = [b for (b,) in con.execute("SELECT DISTINCT bar FROM runs ORDER BY bar").fetchall()]
            dropped = [b for b in bars if through is None or parse_bar_key(b) > through]
            if not dropped:
                return []
            tables = con.execute(
                "SELECT t.schema_name, t.table_name FROM duckdb_tables() t JOIN duckdb_columns() c USING "
                "(database_name, schema_name, table_name) WHERE t.database_name = current_database() AND "
                "c.column_name = 'bar' AND t.table_name <> 'runs' ORDER BY 1, 2").fetchall()
            last = "never settled a bar" if through is None else f"last settled {through:%Y-%m-%d %H:%M}Z"
            status = (f"failed: replay killed after recording this bar's lineage but before saving the paper "
                      f"account with it (the account {last}); this bar and the later ones are not recorded")
            con.execute("BEGIN TRANSACTION")
            for schema, table in tables:
                con.execute(f'DELETE FROM "{schema}"."{table}" WHERE bar IN (SELECT unnest(?::VARCHAR[]))',
                            [dropped])
            con.execute("DELETE FROM runs WHERE bar IN (SELECT unnest(?::VARCHAR[]))", [dropped[1:]])
            con.execute("UPDATE runs SET status = ? WHERE bar = ?", [status[:1000], dropped[0]])
            con.execute("COMMIT")
            return dropped
    finally:
        forget_file(path)


def bars_between(start: str, end: str) -> list[str]:
    """Bar keys of the sessions from ``start`` to ``end`` (dates, inclusive)."""
    return bar_keys(get_calendar().bar_closes(start, end))
