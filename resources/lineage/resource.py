"""The lineage store as a Dagster resource (the file is ``paths.lineage_db``, set by the deployment)."""

from __future__ import annotations

import dagster as dg

from resources.lineage.store import LineageStore


class LineageResource(dg.ConfigurableResource):
    """Handle on the lineage DuckDB file. A run holds no connection between its writes: each step's
    output is one short read-write transaction and its reads open read-only, so a reader (``explain``,
    ``audit``, a notebook) waits at most one transaction, never a run (``resources/lineage/store.py``).
    No field: the file comes from the configuration, never from a launch."""

    def store(self) -> LineageStore:
        return LineageStore()
