"""Alerts to people (Slack, e-mail, webhooks …) through `apprise <https://github.com/caronc/apprise>`_.

Why apprise: one URL per destination (``slack://…``, ``mailto://…``, ``json://host/path``, ~100 services) and
its own per-call deadline, so the engine carries no notification code of its own.

Where URLs come from: ``alerts.urls`` (recorded with the configuration in lineage, so only for URLs that are
not secret) and ``alerts.config_file`` (an apprise configuration file, YAML or text, read at send time and
never recorded: put tokens there). Neither set → alerts are off (the default) and nothing is sent.

Trading never waits on or fails because of an alert: :meth:`AlertSender.send` hands the alerts to one
background thread and returns at once; each delivery is bounded by ``alerts.timeout_seconds`` (apprise's
call deadline); an exception, a failure or a timeout is logged (logger ``tradegraph.alerts``) and counted in
the metric ``tradegraph_alert_deliveries_total{result}``, never raised. Pending deliveries finish (each within
its bound) before the process exits (the executor's worker is joined at interpreter exit).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from CONFIG.config_loader import get_cfg, resolve_path

log = logging.getLogger("tradegraph.alerts")

KINDS = ("kill_switch", "reconciliation", "refused_bar", "halted_bar", "run_failure")
SEVERITIES = ("info", "warning", "failure")


@dataclass(frozen=True)
class Alert:
    """One message. ``kind`` is one of :data:`KINDS`; ``severity`` one of :data:`SEVERITIES` (apprise's
    notify types); ``account`` and ``bar`` say where it happened (``bar`` empty outside a bar)."""

    kind: str
    title: str
    body: str
    severity: str = "warning"
    account: str = "live"
    bar: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alert kind {self.kind!r} is not one of {KINDS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} is not one of {SEVERITIES}")

    def text(self) -> tuple[str, str]:
        """(title, body) as sent: the title names the engine, the account and the kind."""
        title = f"[tradegraph {self.account}] {self.kind}: {self.title}"
        body = self.body + (f"\nbar: {self.bar}" if self.bar else "")
        return title, body


def configured() -> bool:
    """True when at least one destination is configured (``alerts.urls`` or ``alerts.config_file``)."""
    return bool(get_cfg("alerts.urls")) or bool(get_cfg("alerts.config_file"))


def _apprise():
    """An ``Apprise`` object with every configured destination, or None when there is none."""
    import apprise

    urls = list(get_cfg("alerts.urls"))
    config_file = get_cfg("alerts.config_file")
    if not urls and not config_file:
        return None
    apobj = apprise.Apprise()
    for url in urls:
        if not apobj.add(url):
            log.error("alerts.urls: apprise does not understand %r (skipped)", url.split("://")[0] + "://…")
    if config_file:
        cfg = apprise.AppriseConfig()
        path = resolve_path("alerts.config_file")
        if not path.exists():
            log.error("alerts.config_file %s does not exist (its destinations get nothing)", path)
        else:
            cfg.add(str(path))
            apobj.add(cfg)
    return apobj


def deliver(alerts: Sequence[Alert]) -> list[str]:
    """Send now, in this thread; one result per alert: ``sent``, ``failed``, ``timeout`` or ``off``.

    Never raises: an exception inside apprise is logged and reported as ``failed``."""
    from resources.monitoring import metrics

    results = []
    try:
        apobj = _apprise()
    except Exception as exc:  # a broken config file must not take the engine down
        log.exception("alerts: could not load the destinations: %s", exc)
        apobj = False
    timeout = float(get_cfg("alerts.timeout_seconds"))
    for alert in alerts:
        if apobj is None:
            results.append("off")
            continue
        result = "failed"
        if apobj is not False and len(apobj):
            try:
                import apprise

                title, body = alert.text()
                outcome = apobj.notify(body=body, title=title, notify_type=alert.severity, timeout=timeout)
                result = ("sent" if bool(outcome) else
                          "timeout" if outcome.status == apprise.AppriseResultStatus.TIMEOUT else "failed")
            except Exception as exc:
                log.exception("alert %s not delivered: %s", alert.kind, exc)
        if result != "sent":
            log.warning("alert %s (%s) not delivered: %s", alert.kind, alert.title, result)
        results.append(result)
        metrics.record_alert(alert.kind, result)
    return results


class AlertSender:
    """Delivers alerts on one background thread (in order); :meth:`send` never blocks or raises."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._lock = threading.Lock()

    def send(self, alerts: Sequence[Alert]) -> Future | None:
        """Queue ``alerts`` for delivery; None when there is nothing to send or alerts are off."""
        alerts = list(alerts)
        if not alerts:
            return None
        for alert in alerts:  # the engine's log has every alert, delivered or not
            log.warning("%s", alert.text()[0] + " — " + alert.body.replace("\n", "; "))
        try:
            if not configured():
                return None
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradegraph-alerts")
                future = self._pool.submit(deliver, alerts)
                self._pending = [f for f in self._pending if not f.done()] + [future]
            return future
        except Exception as exc:  # e.g. an invalid configuration while a run is finishing: log, never raise
            log.exception("alerts not queued: %s", exc)
            return None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was delivered or gave up (tests; process exit). True when done."""
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return True
        _, not_done = wait(pending, timeout=timeout)
        return not not_done


SENDER = AlertSender()


def send(alerts: Sequence[Alert]) -> Future | None:
    """Queue alerts on the process's sender (see :class:`AlertSender`)."""
    return SENDER.send(alerts)

