"""``tradegraph sweep``: replay a grid of configurations over one period (the Dagster ``sweep_job``)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

from CONFIG.config_loader import resolve_path


def launch(spec_file: Path, out: Path | None, max_concurrent: int, in_process: bool = False):
    """Plan the grid, add its hashes as ``sweep_config`` partitions and run ``sweep_job``; returns the table."""
    import dagster as dg

    from dagster_project.commands.sweep_grid import SweepError, SweepSpec, configurations, gather, write_plan
    from dagster_project.sweep_job import SWEEP_PARTITIONS, get_sweep_job, sweep_run_config

    spec = SweepSpec.from_yaml(spec_file)
    configs = configurations(spec)
    sweep_dir = out or resolve_path("paths.var_dir") / "sweeps" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_plan(spec, configs, sweep_dir)
    # The multiprocess executor needs a persistent instance: DAGSTER_HOME's, else one of the sweep's own
    # (<sweep dir>/dagster_home, kept with the results so the run's events stay readable).
    home = (sweep_dir / "dagster_home").resolve()
    if not os.environ.get("DAGSTER_HOME"):
        home.mkdir(exist_ok=True)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.local_temp(str(home))
    with instance:
        instance.add_dynamic_partitions(SWEEP_PARTITIONS.name, sorted(configs))
        run_config = sweep_run_config(sweep_dir, max_concurrent)
        if in_process:   # tests: one process, the same steps in order
            run_config.pop("execution")
            run = get_sweep_job().execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
            ok, run_id = run.success, run.run_id
        else:
            with dg.execute_job(dg.reconstructable(get_sweep_job), instance=instance, run_config=run_config) as run:
                ok, run_id = run.success, run.run_id
    if not ok:
        raise SweepError(f"sweep_job failed (run {run_id}); its events are in the Dagster instance "
                         f"({os.environ.get('DAGSTER_HOME') or sweep_dir / 'dagster_home'})")
    return gather(sweep_dir), sweep_dir


@click.command("sweep", short_help="Replay a grid of configurations and rank them.",
               help="Replay every configuration of a grid (a YAML sweep file: start, end, parameters, heatmap) "
                    "over one period as the Dagster sweep_job (one sweep_config partition per config hash), "
                    "then print the results sorted and write results.csv, results.md and heatmap.png.")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep directory (default var/sweeps/<UTC time>).")
@click.option("--max-concurrent", type=click.IntRange(1), default=os.cpu_count() or 1, show_default=True,
              help="Configurations replayed at once (the multiprocess executor's max_concurrent).")
def sweep(spec_file: Path, out: Path | None, max_concurrent: int) -> None:
    from dagster_project.commands.sweep_grid import as_markdown

    table, sweep_dir = launch(spec_file, out, max_concurrent)
    for warning in table.attrs.get("warnings", []):
        click.secho(warning, fg="red", err=True)
    click.echo(as_markdown(table))
    click.echo(f"\nresults: {sweep_dir / 'results.csv'}  heat map: {sweep_dir / 'heatmap.png'}")
