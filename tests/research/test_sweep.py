"""``tradegraph sweep``: a grid replayed as the Dagster sweep_job, one sweep_config partition per config hash."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from CONFIG.config_loader import config_hash, effective_config, reset_config
from dagster_project.commands.sweep_grid import SweepError, SweepSpec, configurations, nested
from resources.lineage.store import LineageStore
from tests.conftest import arm_switches

GRID = """start: 2025-06-04
end: 2025-06-04
parameters:
  sizing.no_trade_band: [0.0, 0.002]
  arbitration.reserve_base_bps: [0.0]
heatmap: [sizing.no_trade_band, arbitration.reserve_base_bps]
sort_by: total_return_pct
"""


def _spec(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return SweepSpec.from_yaml(path)


def test_grid_points_hashes_and_refusals(tmp_path, tg_home):
    spec = _spec(tmp_path, GRID.replace("[0.0]\n", "[0.0, 1.0]\n"))
    assert spec.points() == [
        {"sizing.no_trade_band": 0.0, "arbitration.reserve_base_bps": 0.0},
        {"sizing.no_trade_band": 0.0, "arbitration.reserve_base_bps": 1.0},
        {"sizing.no_trade_band": 0.002, "arbitration.reserve_base_bps": 0.0},
        {"sizing.no_trade_band": 0.002, "arbitration.reserve_base_bps": 1.0}]
    assert nested({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    configs = configurations(spec)
    assert len(configs) == 4 and all(len(k) == 64 for k in configs)
    assert config_hash(effective_config()) not in configs   # the shared paths are absolute in every point
    with pytest.raises(SweepError, match="sizing.no_such_key"):
        configurations(_spec(tmp_path, GRID.replace("sizing.no_trade_band", "sizing.no_such_key")))
    with pytest.raises(SweepError, match="same configuration"):
        configurations(_spec(tmp_path, GRID.replace("[0.0, 0.002]", "[0.002, 0.002]")))
    with pytest.raises(SweepError, match="heatmap must name two"):
        _spec(tmp_path, GRID.replace("heatmap: [sizing.no_trade_band, arbitration.reserve_base_bps]",
                                     "heatmap: [sizing.no_trade_band, x]"))


@pytest.mark.slow
def test_sweep_job_replays_each_configuration_as_a_partition(trained, tmp_path, monkeypatch):
    from dagster_project.commands.sweep import launch

    reset_config()
    arm_switches()
    (tmp_path / "grid.yaml").write_text(GRID)
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        table, sweep_dir = launch(tmp_path / "grid.yaml", tmp_path / "sweep", 2, in_process=True)
        keys = set(instance.get_dynamic_partitions("sweep_config"))
        mats = {e.asset_materialization.partition for e in instance.fetch_materializations(
            dg.AssetKey("sweep_result"), limit=10).records}
    assert len(table) == 2 and set(table["config_hash"]) == keys == mats
    assert list(table["total_return_pct"]) == sorted(table["total_return_pct"], reverse=True)
    assert table["sharpe_annualised"].isna().all()         # one session: no Sharpe ratio (it needs 2 days)
    assert (sweep_dir / "heatmap.png").exists() and (sweep_dir / "results.csv").exists()
    first = table.iloc[0]
    assert first["cache_misses"] + table.iloc[1]["cache_misses"] > 0
    assert min(table["cache_misses"]) == 0      # the second configuration ran no model: the cache served it
    for key in keys:   # each configuration recorded its own hash in its own lineage, summary tables only
        assert json.loads((sweep_dir / "results" / f"{key}.json").read_text())["config_hash"] == key
        store = LineageStore(sweep_dir / "configs" / key / "var" / "lineage.duckdb")
        assert set(store.read_sql("SELECT DISTINCT config_hash FROM runs")["config_hash"]) == {key}
        assert "sized_orders" not in store.tables()


def test_cli_options_do_not_clash_and_a_bad_grid_is_one_line(tmp_path, tg_home, capsys):
    import warnings

    from dagster_project.commands.cli import main

    bad = tmp_path / "grid.yaml"
    bad.write_text("parameters: {sizing.no_trade_band: [0.0]}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # click warns when two options share a name (--lineage)
        assert main(["replay", "--help"]) == 0
        assert main(["sweep", str(bad)]) == 2
    assert "needs start, end and parameters" in capsys.readouterr().err


def _results(sweep_dir, rows, sort_by="sharpe_annualised"):
    from dagster_project.commands.sweep_grid import RESULT_COLUMNS
    from TRAINING.common.utils.file_utils import write_atomic_json

    configs = {r["config_hash"]: {"sizing.no_trade_band": r["band"], "arbitration.reserve_base_bps": r["reserve"]}
               for r in rows}
    write_atomic_json(sweep_dir / "plan.json", {"start": "2025-06-04", "end": "2025-06-04", "lineage": "summary",
                                                 "sort_by": sort_by, "shared": {}, "configs": configs,
                                                 "heatmap": ["sizing.no_trade_band", "arbitration.reserve_base_bps"]})
    for r in rows:
        out = {"config_hash": r["config_hash"], "param:sizing.no_trade_band": r["band"],
               "param:arbitration.reserve_base_bps": r["reserve"], **dict.fromkeys(RESULT_COLUMNS, 1.0),
               "sharpe_annualised": r["sharpe"], "sample_warning": r["warning"]}
        write_atomic_json(sweep_dir / "results" / f"{r['config_hash']}.json", out)


def test_a_short_sweep_says_its_ranking_means_nothing(tmp_path, tg_home):
    """One day: every Sharpe is NaN (stored as null) and the sample is short. The table, results.md and the
    heat map say so; the NaN cells are written n/a, not left blank."""
    from dagster_project.commands.sweep_grid import gather

    short = "WARNING: only 1 trading day (fewer than report.min_sessions = 60): …"
    _results(tmp_path, [{"config_hash": h, "band": b, "reserve": 0.0, "sharpe": None, "warning": short}
                        for h, b in (("b" * 64, 0.0), ("a" * 64, 0.002))])
    (tmp_path / "results" / ("d" * 64 + ".json")).write_text('{"config_hash": "' + "d" * 64 + '"}')  # another plan's
    table = gather(tmp_path)
    assert list(table["config_hash"]) == ["a" * 64, "b" * 64]   # NaN everywhere: config-hash order; not "d…"
    assert table.attrs["warnings"][0] == short
    assert "undefined (NaN) for every configuration" in table.attrs["warnings"][1]
    md = (tmp_path / "results.md").read_text()
    assert md.startswith(f"> {short}\n\n> WARNING: sharpe_annualised is undefined")
    assert (tmp_path / "heatmap.png").stat().st_size > 0


def test_a_long_sweep_ranks_with_nan_last_and_no_warning(tmp_path, tg_home):
    from dagster_project.commands.sweep_grid import gather

    _results(tmp_path, [{"config_hash": h, "band": b, "reserve": 0.0, "sharpe": s, "warning": ""}
                        for h, b, s in (("a" * 64, 0.0, 0.5), ("b" * 64, 0.001, None), ("c" * 64, 0.002, 1.5))])
    table = gather(tmp_path)
    assert list(table["config_hash"]) == ["c" * 64, "a" * 64, "b" * 64]
    assert table.attrs["warnings"] == [
        "WARNING: sharpe_annualised is undefined (NaN) for 1 of 3 configurations: they are listed last, unranked"]
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("> WARNING: sharpe_annualised is undefined (NaN) for 1")
    last = md.strip().splitlines()[-1]                            # the NaN row: "n/a", counts as integers
    assert last.startswith("| " + "b" * 64) and "n/a" in last and "nan" not in last and "|      1 |" in last
