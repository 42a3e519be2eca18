"""The lineage store as a Dagster resource (the path comes from ``paths.lineage_db`` unless set)."""

from __future__ import annotations

import dagster as dg

from resources.lineage.store import LineageStore


class LineageResource(dg.ConfigurableResource):
    """Handle on the lineage DuckDB file; opens short-lived connections only."""

    db_path: str = ""

    def store(self) -> LineageStore:
        return LineageStore(self.db_path or None)
