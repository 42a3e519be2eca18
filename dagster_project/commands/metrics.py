"""``tradegraph metrics``: the Prometheus exporter of the engine's metrics.

``serve`` is the long-lived process Prometheus scrapes: it merges the values every run process wrote under
``metrics.dir`` and reads the kill-switch state at each scrape (``resources/monitoring/metrics.py`` lists the
metrics). It binds to ``metrics.host`` (loopback by default) and never opens the lineage file.
"""

from __future__ import annotations

import signal
import threading

import click


@click.group("metrics", short_help="The Prometheus exporter.", help="Prometheus metrics of the engine.")
def metrics() -> None:
    pass


@metrics.command(help="Serve /metrics until interrupted (SIGINT or SIGTERM).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: metrics.port, 9464).")
@click.option("--host", default=None, help="Address to bind (default: metrics.host, 127.0.0.1).")
def serve(port: int | None, host: str | None) -> None:
    from CONFIG.config_loader import get_cfg
    from resources.monitoring.metrics import metrics_dir
    from resources.monitoring.metrics import serve as start

    try:
        server, _ = start(port, host)
    except OSError as exc:  # port taken, address not local: the user's to fix, one line
        raise click.ClickException(f"cannot serve metrics on {host or get_cfg('metrics.host')}:"
                                   f"{port or get_cfg('metrics.port')}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    addr, bound = server.server_address[:2]
    click.echo(f"serving http://{addr}:{bound}/metrics from {metrics_dir()} "
               f"(recording {'on' if get_cfg('metrics.enabled') else 'off: metrics.enabled is false'})", err=True)
    stop.wait()
    server.shutdown()
