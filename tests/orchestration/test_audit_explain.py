"""Audit a recorded bar (identical, or the differing rows with exit 1), and explain a decision."""

import json

import dagster as dg
import pytest

from dagster_project.commands import cli
from dagster_project.commands.audit import audit_bar
from dagster_project.commands.explain import SECTIONS
from resources.lineage.store import LineageStore
from resources.market.calendar import parse_bar_key
from tests.graph_helpers import run_bar, session_keys


@pytest.fixture
def traded_bars(trained, live_clock):
    keys = session_keys("2025-06-03", 4)
    with dg.instance_for_test() as instance:
        for key in keys:
            live_clock(parse_bar_key(key))
            assert run_bar(key, instance=instance).success
    return keys


def _broker_fills():
    from resources.brokers.paper import PaperBroker

    return len(PaperBroker().fills_since(None))


def test_audit_of_a_recorded_bar_is_identical_and_sends_nothing(traded_bars, capsys):
    before = _broker_fills()
    report = audit_bar(traded_bars[-1])
    assert report.identical, report.render()
    assert {t.table for t in report.tables} >= {"features", "predictions", "blended_alpha_weights",
                                                "arbitrated_scores", "gated_signals", "sized_orders"}
    assert _broker_fills() == before  # an audit never reaches a broker
    assert cli.main(["audit", "--bar", traded_bars[-1]]) == 0
    assert "RESULT: identical" in capsys.readouterr().out
    recorded = LineageStore().read_sql("SELECT count(*) FROM sized_orders WHERE bar = ?", [traded_bars[-1]])
    assert recorded.iloc[0, 0] == 50  # the recorded table is untouched (audits write audit__ tables)


def test_audit_uses_the_recorded_config_not_the_current_one(traded_bars, monkeypatch):
    monkeypatch.setenv("TRADEGRAPH__SIZING__MAX_WEIGHT", "0.01")  # today's config differs from the recorded one
    from CONFIG.config_loader import reset_config

    reset_config()
    report = audit_bar(traded_bars[-1])
    assert report.identical, report.render()


def test_audit_of_a_copied_lineage_file_reads_and_writes_that_file(traded_bars, tmp_path, capsys):
    """``--lineage copy.duckdb audit``: the copy's configuration hash differs from the recorded one (its lineage
    path does), so the audit runs under the recorded configuration — but in the copy, never the original."""
    import shutil

    original = LineageStore().path
    copied = tmp_path / "copy.duckdb"
    for src, dst in ((original, copied), (original.with_name(original.name + ".wal"), tmp_path / "copy.duckdb.wal")):
        if src.exists():
            shutil.copy(src, dst)

    def audited(path):
        store = LineageStore(path)
        if "audit__sized_orders" not in store.tables():
            return 0
        return int(store.read_sql("SELECT count(*) FROM audit__sized_orders WHERE bar = ?", [traded_bars[-1]]).iloc[0, 0])

    assert cli.main(["--lineage", str(copied), "audit", "--bar", traded_bars[-1]]) == 0
    assert "RESULT: identical" in capsys.readouterr().out
    assert audited(copied) == 50 and audited(original) == 0


def test_audit_reports_a_difference_when_the_code_changes_the_outcome(traded_bars, monkeypatch, capsys):
    import assets.predictions.stage as pred_stage

    original = pred_stage.predict_returns

    def changed(*args, **kwargs):  # a "code change" that moves every raw prediction by 1e-9 (one frame per bar)
        return [out.assign(raw=out["raw"] + 1e-9) for out in original(*args, **kwargs)]

    monkeypatch.setattr(pred_stage, "predict_returns", changed)
    report = audit_bar(traded_bars[-1])
    assert not report.identical
    diff = {t.table: t for t in report.tables}["predictions"]
    assert not diff.identical and len(diff.differing) > 0
    assert cli.main(["audit", "--bar", traded_bars[-1]]) == 1
    assert "DIFFERENT" in capsys.readouterr().out


def test_audit_of_an_unrecorded_bar_says_so(trained, capsys):
    assert cli.main(["audit", "--bar", "2025-06-04T15:00Z"]) == 2
    assert "does not exist yet" in capsys.readouterr().err
    run_bar_free = LineageStore()
    with run_bar_free.connect():
        pass  # an empty lineage file: the bar has no recorded run
    assert cli.main(["audit", "--bar", "2025-06-04T15:00Z"]) == 2
    assert "no recorded run" in capsys.readouterr().err


def test_explain_prints_the_whole_chain(traded_bars, capsys):
    assert cli.main(["explain", "--bar", traded_bars[-1], "--symbol", "S001"]) == 0
    text = capsys.readouterr().out
    for section in ["[features]", "[predictions]", "[weights]", "[alpha]", "[costs]", "[score]", "[gate]",
                    "[size]", "[execution]"]:
        assert section in text
    assert cli.main(["explain", "--bar", traded_bars[-1], "--symbol", "S001", "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert chain["bar"][0]["symbol"] == "S001" and len(chain["predictions"]) == 10
    assert list(chain) == [title for title, _, _ in SECTIONS]          # the chain's order, not alphabetical
    assert cli.main(["explain", "--bar", traded_bars[-1], "--symbol", "NOPE"]) == 2
    err = capsys.readouterr().err
    assert f"symbol NOPE is not in the universe recorded at bar {traded_bars[-1]}" in err
    assert len(err.strip().splitlines()) == 1                             # one line, no traceback
    assert cli.main(["explain", "--bar", "2025-06-04T15:00Z", "--symbol", "S001"]) == 2
    assert "nothing recorded for bar 2025-06-04T15:00Z" in capsys.readouterr().err


def test_cli_options_in_either_position_and_errors_in_one_line(tmp_path, capsys):
    assert cli.main(["explain", "--bar", "2025-06-04T15:00Z", "--symbol", "S001", "--config", "/nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tradegraph: error:") and "/nope.yaml" in err and len(err.strip().splitlines()) == 1
    lineage = tmp_path / "other.duckdb"
    for argv in (["--lineage", str(lineage), "explain", "--bar", "2025-06-04T15:00Z", "--symbol", "S001"],
                 ["explain", "--bar", "2025-06-04T15:00Z", "--symbol", "S001", "--lineage", str(lineage)]):
        assert cli.main(argv) == 2
        assert str(lineage) in capsys.readouterr().err                   # the option took effect in both places
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: tradegraph" in out and "``" not in out


def test_explain_follows_an_order_to_its_fill_at_a_later_bar(traded_bars, capsys):
    store = LineageStore()
    fill = store.read_sql("SELECT * FROM positions_fills ORDER BY bar, seq LIMIT 1").iloc[0]
    order = store.read_sql("SELECT bar, symbol FROM executions WHERE client_order_id = ?",
                           [fill["client_order_id"]]).iloc[0]
    assert order["bar"] < fill["bar"]                                   # decided at one bar, filled at a later one
    assert cli.main(["explain", "--bar", order["bar"], "--symbol", order["symbol"], "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    (filled,) = chain["fills"]
    assert (filled["fill_id"], filled["bar"], filled["tbl"]) == (fill["fill_id"], fill["bar"], "positions_fills")
    assert filled["decision_price"] == chain["execution"][0]["decision_price"] == chain["size"][0]["price"]
    assert filled["slippage_bps"] == pytest.approx(fill["slippage_bps"])
    assert [(r["prev_status"], r["status"]) for r in chain["lifecycle"] if r["changed"]][-1] == ("ACCEPTED", "FILLED")
    assert cli.main(["explain", "--bar", order["bar"], "--symbol", order["symbol"]]) == 0
    assert "[fills]" in capsys.readouterr().out and "slippage_bps" in chain["fills"][0]
