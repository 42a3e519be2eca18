"""The verdict of ``audit_job`` as asset checks, so a user who launches it from the UI or GraphQL reads it there.

One ``audit_identical`` check per audited asset (``features`` … ``sized_orders``), evaluated after the whole
audit has run: for each of the asset's tables recorded at the bar, the recorded table is compared with the
audit's ``audit__<table>`` bit for bit (:func:`resources.lineage.compare.compare`). Metadata: per table
``identical`` or the number of differing rows, recorded and audited row counts, and a markdown summary of
every audited table (the same verdict ``tradegraph audit`` prints). A check fails (WARN: a difference is a
finding, not a broken run) when a table differs or was not recomputed.

The checks are unpartitioned specs on partitioned assets (the stable path in Dagster 1.13: each evaluation
targets the materialization of the run's partition; ``AssetCheckSpec(partitions_def=...)`` is a preview),
and the bar is named in the metadata. They belong to ``audit_job`` only (``trading_job`` excludes them).
"""

import dagster as dg
import pandas as pd

from resources.lineage.compare import TableDiff, compare
from resources.lineage.io_manager import MODE_TAG
from resources.lineage.resource import LineageResource

AUDITED_ASSETS = ("features", "predictions", "model_skill", "blended_alpha", "arbitrated_scores", "gated_signals",
                  "sized_orders")
CHECK_NAME = "audit_identical"


def audit_diffs(store, bar: str) -> dict[str, list[TableDiff]]:
    """Asset → the comparison of each table it recorded at ``bar`` with its audit (an audit table missing:
    a difference saying so)."""
    out: dict[str, list[TableDiff]] = {a: [] for a in AUDITED_ASSETS}
    with store.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT asset, tbl FROM materializations WHERE bar = ? AND asset IN (SELECT unnest(?)) "
            "AND tbl NOT LIKE 'audit__%' ORDER BY asset, tbl", [bar, list(AUDITED_ASSETS)]).fetchall()
        for asset, table in rows:
            recorded = store.read_partition(table, bar, con)
            if not store.has_table(con, f"audit__{table}"):
                out[asset].append(TableDiff(table, False, len(recorded), 0,
                                            pd.DataFrame({"where": ["not recomputed by the audit"]})))
                continue
            out[asset].append(compare(table, recorded, store.read_partition(f"audit__{table}", bar, con)))
    return out


def summary_markdown(bar: str, diffs: dict[str, list[TableDiff]]) -> str:
    """The audit's verdict as a markdown table (one row per table)."""
    rows = [(t.table, "identical" if t.identical else f"**{len(t.differing)} row(s) differ**", t.recorded_rows,
             t.audit_rows) for a in AUDITED_ASSETS for t in diffs[a]]
    frame = pd.DataFrame(rows, columns=["table", "verdict", "recorded rows", "audited rows"])
    verdict = "identical" if all(t.identical for ts in diffs.values() for t in ts) and rows else "differences found"
    return f"### Audit of bar {bar}: {verdict}\n\n" + (frame.to_markdown(index=False) if rows else "no table recorded")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(CHECK_NAME, asset=a, description="the audit recomputed this asset's tables "
                             "identically (bit for bit) from the recorded inputs, models and configuration")
           for a in AUDITED_ASSETS],
    name="audit_verdict",
    description="audit_job's verdict: recorded tables vs audit__ tables, per audited asset.",
    can_subset=True,  # a UI "Materialize selected" of some audited assets carries only their checks
)
def audit_verdict(context: dg.AssetCheckExecutionContext, lineage: LineageResource):
    run = context.instance.get_run_by_id(context.run.run_id)
    bar = run.tags.get("dagster/partition", "")
    selected = {k.asset_key for k in context.selected_asset_check_keys}
    assets = [a for a in AUDITED_ASSETS if dg.AssetKey(a) in selected]
    if run.tags.get(MODE_TAG) != "audit":
        for asset in assets:
            yield dg.AssetCheckResult(asset_key=asset, check_name=CHECK_NAME, passed=False,
                                      severity=dg.AssetCheckSeverity.WARN,
                                      description=f"not an audit run (tag {MODE_TAG}={run.tags.get(MODE_TAG)})")
        return
    diffs = audit_diffs(lineage.store(), bar)
    summary = summary_markdown(bar, diffs)
    for asset in assets:
        tables = diffs[asset]
        identical = bool(tables) and all(t.identical for t in tables)
        meta: dict[str, object] = {"bar": bar, "summary": dg.MetadataValue.md(summary)}
        for t in tables:
            meta[f"{t.table}/verdict"] = "identical" if t.identical else "differs"
            meta[f"{t.table}/differing_rows"] = len(t.differing)
            meta[f"{t.table}/recorded_rows"] = t.recorded_rows
            meta[f"{t.table}/audited_rows"] = t.audit_rows
        yield dg.AssetCheckResult(
            asset_key=asset, check_name=CHECK_NAME, passed=identical, severity=dg.AssetCheckSeverity.WARN,
            description=(f"bar {bar}: " + ("identical" if identical else "no table recorded" if not tables else
                                           ", ".join(f"{t.table} differs" for t in tables if not t.identical))),
            metadata=meta)
