"""``tradegraph``: audit, explain, replay, the kill switch, training and the data check, from a terminal.

Global options (``--config``, ``--lineage``) are accepted before or after the command name. A usage or input
error (an unknown bar, a missing file, an invalid configuration value, a locked lineage file) prints one line
and exits 2; ``audit`` exits 1 when the audited bar differs from its record.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from CONFIG.config_loader import ConfigError, load_config
from dagster_project.commands.data_check import data
from dagster_project.commands.kill_switch import kill_switch
from dagster_project.commands.lineage_migrate import lineage_migrate
from dagster_project.commands.metrics import metrics
from dagster_project.commands.sweep import sweep
from dagster_project.commands.sweep_grid import SweepError
from resources.credentials import CredentialsError
from resources.kill_switch.logic import KillSwitchError
from resources.lineage.store import LineageLocked
from resources.market.contract import DataError
from TRAINING.common.utils.cli import run_command
from TRAINING.registry import RegistryError

PROG = "tradegraph"
USER_ERRORS: tuple[type[BaseException], ...] = (LookupError, FileNotFoundError, LineageLocked, ConfigError,
                                                 RegistryError, CredentialsError, DataError,
                                                 KillSwitchError, SweepError)


def _apply(ctx: click.Context) -> None:
    """Make the options given so far the process's configuration (each level may add one)."""
    lineage, config = ctx.meta.get("tg_lineage"), ctx.meta.get("tg_config")
    if lineage:
        os.environ["TRADEGRAPH__PATHS__LINEAGE_DB"] = str(Path(lineage).resolve())
    if lineage or config:
        load_config(config)


def _remember(key: str) -> Callable:
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.meta[key] = value
            _apply(ctx)
    return callback


def global_options(fn: Callable) -> Callable:
    """``--config`` and ``--lineage``, on the group and on every command, so either position works."""
    fn = click.option("--lineage", type=click.Path(dir_okay=False), expose_value=False, is_eager=True,
                      callback=_remember("tg_lineage"),
                      help="Lineage DuckDB file to use instead of paths.lineage_db (e.g. var/demo/lineage.duckdb).")(fn)
    return click.option("--config", type=click.Path(exists=True, dir_okay=False), expose_value=False,
                        is_eager=True, callback=_remember("tg_config"),
                        help="A user configuration file over CONFIG/defaults.yaml (as TRADEGRAPH_CONFIG).")(fn)


class LazyGroup(click.Group):
    """A group whose heavy commands are imported only when named (or listed by ``--help``): ``train`` imports
    torch (≈ 1.5 s), which every other command would otherwise pay at start-up — an operator's
    ``tradegraph kill-switch halt`` first. ``lazy``: command name → ``module:attribute``."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy.pop(name).split(":")
            self.add_command(global_options(getattr(importlib.import_module(module), attr)), name)
        return super().get_command(ctx, name)


@click.group(PROG, cls=LazyGroup, lazy={"train": "TRAINING.train:train_command"},
             help="audit, explain, replay, the kill switch and training, from a terminal.",
             context_settings={"max_content_width": 110})
@global_options
def cli() -> None:
    pass


@cli.command(short_help="Rematerialize a past bar and compare it with its record.",
             help="Rematerialize a past bar from its recorded inputs, models and configuration, and compare "
                  "every table with its record (exit 1 on a difference). Never reaches a broker.")
@click.option("--bar", required=True, metavar="KEY", help="Bar key: the UTC bar close, e.g. 2025-06-06T19:55Z.")
@global_options
def audit(bar: str) -> int:
    from dagster_project.commands.audit import audit_bar

    report = audit_bar(bar)
    click.echo(report.render())
    return 0 if report.identical else 1


@cli.command(short_help="Print the decision chain of one bar and symbol.",
             help="Print the whole decision chain of one bar and symbol: features → predictions → weights → "
                  "alpha → costs → gate → size → order → fills.")
@click.option("--bar", required=True, metavar="KEY", help="Bar key: the UTC bar close, e.g. 2025-06-06T19:55Z.")
@click.option("--symbol", required=True, help="Symbol, e.g. S001.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (sections in chain order).")
@global_options
def explain(bar: str, symbol: str, as_json: bool) -> None:
    from dagster_project.commands.explain import explain as explain_chain
    from dagster_project.commands.explain import render, to_json

    chain = explain_chain(bar, symbol)
    click.echo(to_json(chain) if as_json else render(bar, symbol, chain))


@cli.command(short_help="Replay sessions with the replay paper account.",
             help="Replay sessions through the pure stage functions with the replay paper account.")
@click.option("--start", required=True, metavar="YYYY-MM-DD", help="First session.")
@click.option("--end", required=True, metavar="YYYY-MM-DD", help="Last session (inclusive).")
@click.option("--no-record", is_flag=True, help="Write no lineage (timing only).")
@click.option("--lineage-mode", "lineage_mode", type=click.Choice(["full", "summary"]), default="full",
              show_default=True, help="full: every table (explain, audit); summary: P&L, account, kill switch, "
                                      "refusals and fills only (sweeps).")
@click.option("--no-prediction-cache", is_flag=True,
              help="Run every model (the cache under paths.prediction_cache is neither read nor written).")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted replay: only the period's bars after the replay account's last "
                   "settled bar.")
@global_options
def replay(start: str, end: str, no_record: bool, lineage_mode: str, no_prediction_cache: bool,
           resume: bool) -> None:
    from dagster_project.commands.replay import ReplayEngine, bars_between

    bars = bars_between(start, end)
    if not bars:
        raise click.UsageError(f"no bar between {start} and {end} in the configured calendar")
    result = ReplayEngine(record=not no_record, lineage=lineage_mode,
                          prediction_cache=not no_prediction_cache).run(bars, progress=True, resume=resume)
    if not result.bars:
        click.echo(f"nothing to replay: the replay account has already settled every bar from {start} to {end}")
        return
    if len(result.bars) < len(bars):
        click.echo(f"resumed at {result.bars[0]}: {len(bars) - len(result.bars)} bars of the period were already "
                   "settled by the replay account")
    click.echo(f"replayed {len(result.bars)} bars in {result.seconds:.1f}s "
               f"({result.seconds / len(result.bars) * 1e3:.1f} ms/bar): {result.orders} orders, {result.fills} fills; "
               f"model calls {result.cache_hits} cached, {result.cache_misses} computed; run id {result.run_id}")
    if result.switch_state != "ACTIVE":   # orders after the trip were denied: never a quiet success
        click.echo(f"WARNING: the replay account's kill switch is {result.switch_state}: "
                   + "; ".join(result.switch_trips), err=True)
        raise SystemExit(1)


for _sub in kill_switch.commands.values():
    global_options(_sub)
cli.add_command(global_options(kill_switch))
for _sub in metrics.commands.values():
    global_options(_sub)
cli.add_command(global_options(metrics))
for _sub in data.commands.values():
    global_options(_sub)
cli.add_command(global_options(data))
cli.add_command(global_options(sweep))
cli.add_command(global_options(lineage_migrate))


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(cli, argv, PROG, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
