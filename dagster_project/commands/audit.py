"""Audit a past bar: rematerialize ``features`` → ``sized_orders`` from what was recorded, and compare.

The audit run (tag ``tradegraph/mode=audit``) reads the recorded ``bars`` and ``positions``, loads the
model versions recorded for the bar and runs under the configuration recorded with it (its hash is in
``runs``; its JSON in ``configs``). It writes ``audit__<table>`` tables, never the recorded ones, and no
step of it can reach a broker. The report says, per table, ``identical`` or which rows differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd

from CONFIG.config_loader import config_hash, use_config
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.records import recorded_run
from resources.lineage.store import LineageStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
AUDITED_ASSETS = ["features", "predictions", "model_skill", "blended_alpha", "arbitrated_scores",
                  "gated_signals", "sized_orders"]
AUDIT_SELECTION = ["bars", "positions", *AUDITED_ASSETS]


@dataclass
class TableDiff:
    table: str
    identical: bool
    recorded_rows: int
    audit_rows: int
    differing: pd.DataFrame = field(default_factory=pd.DataFrame)


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


def _key_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("symbol", "horizon", "family", "family_a", "family_b", "target") if c in frame]


def compare(table: str, recorded: pd.DataFrame, audited: pd.DataFrame) -> TableDiff:
    """Bit-level comparison (NaN equals NaN); differing rows listed by their key columns."""
    same_shape = list(recorded.columns) == list(audited.columns) and len(recorded) == len(audited)
    if same_shape:
        a, b = recorded.reset_index(drop=True), audited.reset_index(drop=True)
        eq = np.ones(len(a), dtype=bool)
        for c in a.columns:
            x, y = a[c], b[c]
            both_nan = x.isna().to_numpy() & y.isna().to_numpy()
            eq &= (x.astype(object).to_numpy() == y.astype(object).to_numpy()) | both_nan
        if eq.all():
            return TableDiff(table, True, len(recorded), len(audited))
        keys = _key_columns(a)
        diff = a.loc[~eq, keys].assign(where="value differs")
        return TableDiff(table, False, len(recorded), len(audited), diff)
    keys = _key_columns(recorded) or list(recorded.columns[:1])
    merged = recorded[keys].merge(audited[keys], how="outer", indicator=True)
    diff = merged[merged["_merge"] != "both"].rename(columns={"_merge": "where"})
    if diff.empty:
        diff = pd.DataFrame({"where": [f"columns differ: {sorted(set(recorded.columns) ^ set(audited.columns))}"]})
    return TableDiff(table, False, len(recorded), len(audited), diff)


def audit_bar(bar: str, store: LineageStore | None = None,
              instance: dg.DagsterInstance | None = None) -> AuditReport:
    """Run the audit job for ``bar`` in process under the recorded config and compare every table."""
    from dagster_project.definitions import defs

    store = store or LineageStore()
    cfg, h, versions = recorded_run(store, bar)
    with use_config(cfg, full=True) as used:
        if config_hash(used) != h:
            raise RuntimeError(f"recorded configuration {h[:16]} could not be rebuilt identically")
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
