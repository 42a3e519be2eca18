"""Prometheus metrics of the engine, written by short-lived run processes, served by one exporter.

What is published (every name starts ``tradegraph_``; ``account`` is ``live`` or ``replay``):

| metric | type | labels | meaning |
|---|---|---|---|
| ``bar_close_to_orders_seconds`` | histogram | account | wall time from a live bar's close until its ``executions`` step finished (orders at the broker) |
| ``bars_total`` | counter | account, outcome | bars run: ``traded`` (≥ 1 order sent), ``no_orders``, ``refused`` |
| ``orders_total`` | counter | account, verdict, status | orders, by kill-switch verdict and broker status (``NOT_SENT`` included) |
| ``rejects_total`` | counter | account, reason | orders the broker rejected, by reason code |
| ``fills_total`` | counter | account | fills recorded (each ``fill_id`` once) |
| ``portfolio_value`` | gauge | account | the latest bar's portfolio value (currency units) |
| ``daily_return`` | gauge | account | the latest bar's return vs start-of-day equity (decimal) |
| ``reconciliation_mismatches`` | gauge | account | symbols whose broker quantity differs from the recorded fills, latest bar |
| ``last_bar_timestamp_seconds`` | gauge | account | the latest bar close with a P&L (Unix time; staleness) |
| ``kill_switch_state`` | gauge | account, state | 1 for the current state (ACTIVE, REDUCING, HALTED), read at scrape time |
| ``alert_deliveries_total`` | counter | kind, result | alerts: ``sent``, ``failed``, ``timeout`` |
| ``run_failures_total`` | counter | job | Dagster runs that failed (the run-failure sensor) |

Design (prometheus_client's multiprocess mode): each bar is a new process, so a process keeps its values in
mmap files under ``metrics.dir`` (``PROMETHEUS_MULTIPROC_DIR``) and the long-lived exporter
(``tradegraph metrics serve``) merges every file at each scrape (``MultiProcessCollector``). One departure
from the library's default: a file is named after a *slot*, not the process id. A process takes the first
free slot (an exclusive ``flock`` held for its life; concurrent processes get distinct slots), and a new
holder of a slot continues the values the last one left (the library reads a file's values when a metric is
created), so counters keep counting across runs and the directory holds one file set per *concurrent*
process instead of one per run ever (a year of 5-minute bars would leave ~60 000 files for every scrape to
read). Gauges use the ``mostrecent`` mode: the last value written by any process wins. The kill-switch
state is read from its state file when scraped, so a trip from the CLI shows at once, between bars too.

Recording is off when ``metrics.enabled`` is false; a recording error is logged, never raised (metrics never
stop trading).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from CONFIG.config_loader import get_cfg, resolve_path

log = logging.getLogger("tradegraph.metrics")
PREFIX = "tradegraph_"
_lock = threading.RLock()


@dataclass(frozen=True)
class BarObservation:
    """What one step of one bar contributes to the metrics (built by :mod:`resources.monitoring.bar_events`).

    ``orders``: (verdict, status) → count; ``rejects``: reason code → count; ``latency_s``: bar close →
    executions done (None when not measured: refused, not live); ``outcome``: traded | no_orders | refused
    (None: the step says nothing about it); P&L fields None when the step did not compute them."""

    account: str
    orders: Mapping[tuple[str, str], int] = field(default_factory=dict)
    rejects: Mapping[str, int] = field(default_factory=dict)
    fills: int = 0
    latency_s: float | None = None
    outcome: str | None = None
    portfolio_value: float | None = None
    daily_return: float | None = None
    mismatches: int | None = None
    bar_ts: dt.datetime | None = None


def metrics_dir() -> Path:
    return resolve_path("metrics.dir")


class _Slot:
    """The process identifier the multiprocess files are named after: ``slot<N>``, N the first slot whose
    lock this process could take. Re-acquired after a fork (a child must not share its parent's files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid = -1
        self.name = ""
        self._fh = None

    def __call__(self) -> str:
        if self.pid != os.getpid():
            self._acquire()
        return self.name

    def _acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            fh = open(self.directory / f"slot{n}.lock", "a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                n += 1
                continue
            self._fh, self.pid, self.name = fh, os.getpid(), f"slot{n}"
            return

    def release(self) -> None:
        if self._fh is not None and self.pid == os.getpid():
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
        self._fh, self.pid, self.name = None, -1, ""


class _Recorder:
    """The metric objects of one metrics directory, in multiprocess mode (created once per process)."""

    def __init__(self, directory: Path) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        self.slot = _Slot(directory)
        values.ValueClass = values.MultiProcessValue(process_identifier=self.slot)
        reg = None  # values live in the files; the exporter's MultiProcessCollector reads them

        def gauge(name: str, doc: str) -> Any:
            return Gauge(PREFIX + name, doc, ["account"], registry=reg, multiprocess_mode="mostrecent")

        self.latency = Histogram(PREFIX + "bar_close_to_orders_seconds",
                                 "Wall seconds from a live bar's close until its executions step finished.",
                                 ["account"], registry=reg, buckets=[float(b) for b in get_cfg("metrics.latency_buckets")])
        self.bars = Counter(PREFIX + "bars", "Bars run, by outcome (traded, no_orders, refused).",
                            ["account", "outcome"], registry=reg)
        self.orders = Counter(PREFIX + "orders", "Orders, by kill-switch verdict and broker status.",
                              ["account", "verdict", "status"], registry=reg)
        self.rejects = Counter(PREFIX + "rejects", "Orders the broker rejected, by reason code.",
                               ["account", "reason"], registry=reg)
        self.fills = Counter(PREFIX + "fills", "Fills recorded (each fill_id once).", ["account"], registry=reg)
        self.portfolio_value = gauge("portfolio_value", "Portfolio value at the latest bar.")
        self.daily_return = gauge("daily_return", "Return of the latest bar vs start-of-day equity (decimal).")
        self.mismatches = gauge("reconciliation_mismatches", "Symbols whose broker quantity differs from the "
                                                             "recorded fills, latest bar.")
        self.last_bar = gauge("last_bar_timestamp_seconds", "Close of the latest bar with a P&L (Unix time).")
        self.alerts = Counter(PREFIX + "alert_deliveries", "Alert deliveries, by kind and result.",
                              ["kind", "result"], registry=reg)
        self.run_failures = Counter(PREFIX + "run_failures", "Dagster runs that failed.", ["job"], registry=reg)

    def close(self) -> None:
        from prometheus_client import values

        values.close_all_multiprocess_files()
        self.slot.release()


_recorder: _Recorder | None = None


def _get() -> _Recorder | None:
    """The recorder for the configured directory (re-made when the directory changed), or None when off."""
    global _recorder
    if not get_cfg("metrics.enabled"):
        return None
    directory = metrics_dir()
    if _recorder is None or _recorder.directory != directory:
        if _recorder is not None:
            _recorder.close()
        _recorder = _Recorder(directory)
    return _recorder


def _safely(fn):
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            with _lock:
                rec = _get()
                if rec is not None:
                    fn(rec, *args, **kwargs)
        except Exception as exc:  # metrics never stop trading
            log.exception("metrics not recorded (%s): %s", fn.__name__, exc)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_safely
def record_bar(rec: _Recorder, obs: BarObservation) -> None:
    """Add one step's observation of a bar (see :class:`BarObservation`)."""
    a = obs.account
    for (verdict, status), n in sorted(obs.orders.items()):
        rec.orders.labels(a, verdict, status).inc(n)
    for reason, n in sorted(obs.rejects.items()):
        rec.rejects.labels(a, reason).inc(n)
    if obs.fills:
        rec.fills.labels(a).inc(obs.fills)
    if obs.latency_s is not None:
        rec.latency.labels(a).observe(obs.latency_s)
    if obs.outcome is not None:
        rec.bars.labels(a, obs.outcome).inc()
    if obs.portfolio_value is not None:
        rec.portfolio_value.labels(a).set(obs.portfolio_value)
    if obs.daily_return is not None:
        rec.daily_return.labels(a).set(obs.daily_return)
    if obs.mismatches is not None:
        rec.mismatches.labels(a).set(obs.mismatches)
    if obs.bar_ts is not None:
        rec.last_bar.labels(a).set(obs.bar_ts.timestamp())


@_safely
def record_alert(rec: _Recorder, kind: str, result: str) -> None:
    """Count one alert delivery (``result``: sent | failed | timeout; ``off`` is not counted)."""
    if result != "off":
        rec.alerts.labels(kind, result).inc()


@_safely
def record_run_failure(rec: _Recorder, job: str) -> None:
    rec.run_failures.labels(job).inc()


# ---- the exporter ----------------------------------------------------------------------------------------

class KillSwitchCollector:
    """``tradegraph_kill_switch_state{account, state}`` read from the switch's state file at each scrape
    (read only; a corrupt file reads HALTED, as the engine would see it). The replay account is included
    when its state file exists."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from resources.kill_switch.logic import KillSwitch, TradingState
        from resources.kill_switch.resource import state_path_for

        fam = GaugeMetricFamily(PREFIX + "kill_switch_state", "Kill-switch state: 1 for the current one.",
                                labels=["account", "state"])
        now = dt.datetime.now(dt.UTC)
        for account in ("live", "replay"):
            path = state_path_for(account)
            if account != "live" and not path.exists():
                continue
            try:
                current = KillSwitch(path).status(now).trading_state
            except Exception as exc:  # unreadable beyond what the switch handles: say so, do not guess
                log.error("kill switch %s unreadable for metrics: %s", path, exc)
                continue
            for state in TradingState:
                fam.add_metric([account, state.value], 1.0 if state == current else 0.0)
        yield fam


def exporter_registry(directory: Path | None = None):
    """A registry that merges every process's files in ``directory`` plus the kill-switch state."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = directory or metrics_dir()
    directory.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    registry.register(KillSwitchCollector())
    return registry


def serve(port: int | None = None, host: str | None = None):
    """Start the exporter's HTTP server on a daemon thread; returns ``(server, thread)``.

    Serves ``/metrics`` (any path answers) on ``metrics.host`` (loopback by default) : ``metrics.port``."""
    from prometheus_client import start_http_server

    port = int(get_cfg("metrics.port") if port is None else port)
    host = host or get_cfg("metrics.host")
    return start_http_server(port, addr=host, registry=exporter_registry())
