"""``tradegraph data check --dir DIR``: the market-data contract's diagnosis of every file, before anything runs.

Per file: rows, span, sessions, the detected interval, stamp and time zone, the share of rows on the bar grid
and the grid they cover, the skipped rows by rule, findings and the verdict (``OK``, ``WARN`` = accepted with
findings, ``REFUSED`` with the key to set). Exit code 1 when any file would be refused, 0 otherwise; the files
are read under the effective configuration (``--config`` or ``TRADEGRAPH__MARKET__…``), exactly as the engine
would read them. No Dagster import, no lineage write.
"""

from __future__ import annotations

import click

from CONFIG.config_loader import get_cfg
from resources.market.contract import DataError


@click.group("data", short_help="Check market-data files against the data contract.",
             help="Market data: check files against the data contract (docs/engine.md).")
def data() -> None:
    pass


@data.command("check", short_help="Diagnose every bar file of a directory (exit 1 if one is refused).",
              help="Read every <SYMBOL>.csv / .parquet of DIR as the engine would (market.files_timezone, "
                   "market.files_stamp, market.bar_minutes, market.bar_alignment, the calendar's range) and print "
                   "each file's diagnosis: rows, span, sessions, detected interval / stamp / time zone, rows on the "
                   "grid, skipped rows by rule, verdict. Exit 1 when a file would be refused.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Directory of bar files (default market.files_dir).")
def check(directory: str | None) -> int:
    from resources.market.files import FilesSource

    directory = directory or get_cfg("market.files_dir")
    if not directory:
        raise click.UsageError("give --dir DIR (or set market.files_dir)")
    try:
        src = FilesSource(directory, refuse=False)
    except DataError as exc:  # the directory itself, or the adjustments file
        raise click.ClickException(str(exc)) from None
    refused = [d for d in src.diagnoses if d.verdict == "refused"]
    for diag in src.diagnoses:
        click.echo(diag.render())
        click.echo("")
    n_flags, n_adj = len(src.flags), len(src.adjustments)
    click.echo(f"{len(src.diagnoses)} file(s): {len(src.diagnoses) - len(refused)} accepted, {len(refused)} refused; "
               f"{int(src.skips['rows'].sum()) if len(src.skips) else 0} row(s) skipped; "
               f"{n_flags} split-like jump(s) without an adjustment; {n_adj} corporate action(s) "
               f"(market.adjustments_file: {get_cfg('market.adjustments_file') or 'none'})")
    for _, f in src.flags.iterrows():
        click.echo(f"  hold {f['symbol']} from {f['ts']:%Y-%m-%dT%H:%MZ}: {f['reason']}")
    return 1 if refused else 0
