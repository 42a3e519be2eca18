"""``tradegraph lineage-migrate``: convert a lineage file recorded before the compact layout (issue 12) to it.

Not needed to keep using an old file: its plain tables are read and written as they are. Migrating only saves
their bytes (``resources/lineage/layout.py``); readers see the same rows, columns and types after. One
transaction: interrupted, the file stays as it was. It takes the file's write lock for the copy, so stop the
runs writing to it first (a writer waits at most ``market.lock_retry_seconds``).
"""

from __future__ import annotations

import click


@click.command("lineage-migrate", short_help="Store an old lineage file's big tables in the compact layout.",
               help="Convert the plain tables of the lineage file (paths.lineage_db, or --lineage) that have a "
                    "compact layout: same rows, columns and types for every reader, fewer bytes.")
def lineage_migrate() -> None:
    from resources.lineage.store import LineageStore

    store = LineageStore()
    if not store.path.exists():
        raise FileNotFoundError(f"lineage database {store.path} does not exist")
    before = store.path.stat().st_size
    done = store.migrate()
    if not done:
        click.echo(f"{store.path}: nothing to migrate (its tables are compact already or have no compact layout)")
        return
    click.echo(f"{store.path}: {len(done)} tables migrated ({', '.join(done)}); file {before:,} B → "
               f"{store.path.stat().st_size:,} B (freed blocks are reused by later writes)")
