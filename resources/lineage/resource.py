"""The lineage store as a Dagster resource (the file is ``paths.lineage_db``, set by the deployment)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from resources.lineage.store import LineageStore, hold_connection


class LineageResource(dg.ConfigurableResource):
    """Handle on the lineage DuckDB file. For the length of a run it holds one read-write connection
    (opened at the first use) that every store, the IO manager and the hooks of the run share. No field: the
    file comes from the configuration, never from a launch."""

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[LineageResource]:
        with hold_connection(None):
            yield self

    def store(self) -> LineageStore:
        return LineageStore()
