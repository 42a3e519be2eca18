"""Audit a past bar: rematerialize ``features`` → ``sized_orders`` from what was recorded, and compare.

The audit run (tag ``tradegraph/mode=audit``) reads the recorded ``bars`` and ``positions``, loads the
model versions recorded for the bar and runs under the configuration recorded with it (its hash is in
``runs``; its JSON in ``configs``), with this process's ``paths`` and the audited file as the lineage file
(:func:`resources.lineage.records.located`). It writes ``audit__<table>`` tables, never the recorded ones, and no
step of it can reach a broker. The report says, per table, ``identical`` or which rows differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from CONFIG.config_loader import config_hash, use_config
from resources.lineage.compare import TableDiff, compare
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.records import located, recorded_run
from resources.lineage.store import LineageStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
AUDITED_ASSETS = ["features", "predictions", "model_skill", "blended_alpha", "arbitrated_scores",
                  "gated_signals", "sized_orders"]
AUDIT_SELECTION = ["bars", "positions", *AUDITED_ASSETS]
__all__ = ["AUDITED_ASSETS", "AuditReport", "TableDiff", "audit_bar", "compare"]


@dataclass
class AuditReport:
    bar: str
    config_hash: str
    model_versions: str
    tables: list[TableDiff]

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    def render(self) -> str:
        lines = [f"audit of bar {self.bar}", f"  recorded config {self.config_hash[:16]} (used for the audit)",
                 f"  recorded models {self.model_versions}"]
        for t in self.tables:
            verdict = "identical" if t.identical else f"DIFFERENT ({len(t.differing)} row(s))"
            lines.append(f"  {t.table:<26} {verdict}  [{t.recorded_rows} recorded, {t.audit_rows} audited]")
            if not t.identical and len(t.differing):
                lines += ["      " + ln for ln in t.differing.head(20).to_string(index=False).splitlines()]
        lines.append("RESULT: " + ("identical" if self.identical else "differences found"))
        return "\n".join(lines)


def audit_bar(bar: str, store: LineageStore | None = None,
              instance: dg.DagsterInstance | None = None) -> AuditReport:
    """Run the audit job for ``bar`` in process under the recorded config and compare every table."""
    from dagster_project.definitions import defs

    store = store or LineageStore()
    cfg, h, versions = recorded_run(store, bar)
    with use_config(cfg, full=True) as used:
        if config_hash(used) != h:
            raise RuntimeError(f"recorded configuration {h[:16]} could not be rebuilt identically")
    with use_config(located(cfg, store.path), full=True):
        job = defs.resolve_job_def("audit_job")
        own = instance is None
        instance = instance or dg.DagsterInstance.ephemeral()
        try:
            result = job.execute_in_process(partition_key=bar, instance=instance, tags={MODE_TAG: "audit"},
                                            run_config=QUIET, raise_on_error=True)
        finally:
            if own:
                instance.dispose()
        if not result.success:
            raise RuntimeError(f"audit run for {bar} failed")
    with store.connect(read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "SELECT DISTINCT tbl FROM materializations WHERE bar = ? AND asset IN (SELECT unnest(?)) "
            "AND tbl NOT LIKE 'audit__%' ORDER BY tbl", [bar, AUDITED_ASSETS]).fetchall()]
        diffs = [compare(t, store.read_partition(t, bar, con), store.read_partition(f"audit__{t}", bar, con))
                 for t in tables]
    return AuditReport(bar, h, versions, diffs)
