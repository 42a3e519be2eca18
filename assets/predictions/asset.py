"""The ``predictions`` asset: every model on the bar, standardized, plus P(peak)/P(valley)."""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext

from assets.asset_helpers import mode_of, record_run
from assets.bars.logic import BarWindow
from assets.history import LineageHistory
from assets.predictions.stage import compute_predictions
from dagster_project.partitions import bar_partitions
from resources.lineage.resource import LineageResource
from resources.model_registry import ModelRegistryResource


def recorded_versions(lineage: LineageResource, bar: str) -> dict[str, str]:
    """The model versions recorded for a bar (an audit loads these, never the latest)."""
    status = lineage.store().read_partition("predictions_models", bar)
    ok = status[status["status"] == "ok"]
    return {f"{t}/{f}": v for t, f, v in zip(ok["target"], ok["family"], ok["version"], strict=True)}


@dg.asset(
    partitions_def=bar_partitions,
    group_name="signals",
    io_manager_key="lineage_io",
    kinds={"lightgbm", "pytorch", "duckdb"},
    description="Per symbol × horizon × family the raw and standardized prediction (robust z, clipped), and "
                "per symbol P(peak), P(valley) from the barrier models (neutral prior when absent). Missing or "
                "bad models are skipped for the bar with the reason recorded (table predictions_models).",
)
def predictions(context: AssetExecutionContext, bars: BarWindow, features: pd.DataFrame,
                models: ModelRegistryResource, lineage: LineageResource) -> dict[str, pd.DataFrame]:
    mode = mode_of(context)
    versions = recorded_versions(lineage, context.partition_key) if mode == "audit" else None
    model_set = models.load(versions)
    out = compute_predictions(bars, features, model_set, LineageHistory(lineage.store()))
    status = out["predictions_models"]
    record_run(lineage.store(), context.run.run_id, context.partition_key, mode, "running",
               model_versions=str(model_set.versions()))
    preds = out["predictions"]
    skipped = status[status["status"] != "ok"]
    context.add_output_metadata({
        "rows": len(preds), "models_ok": int((status["status"] == "ok").sum()), "models_skipped": len(skipped),
        "skipped": dg.MetadataValue.md(skipped.to_markdown(index=False) if len(skipped) else "none"),
        "nan_share": round(float(preds["raw"].isna().mean()) if len(preds) else 0.0, 6),
        "model_versions": dg.MetadataValue.json(model_set.versions()),
        "mode": mode,
    })
    return out
