"""The training CLI and train_all: publishes, activates, prints the IC table; default registry path."""

from __future__ import annotations

from CONFIG.config_loader import use_config
from TRAINING import registry as R
from TRAINING.testing import small_training_overrides
from TRAINING.train import main, train_all


def test_cli_trains_publishes_and_prints_the_table(tmp_path, capsys):
    with use_config(small_training_overrides(n_symbols=8, sessions=6)):
        assert R.registry_is_empty(root=tmp_path)
        assert main(["--sessions", "6", "--train-end", "2025-05-01", "--families", "lightgbm,barrier_lightgbm",
                     "--registry", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        for text in ("lightgbm IC", "5m", "60m", "peak_15m", "valley_15m", "AUC"):
            assert text in out
        assert "sequential" not in out
        assert not R.registry_is_empty(root=tmp_path)
        meta = R.load("ret_60m", "lightgbm", root=tmp_path).meta
        assert meta["training_window"]["last_session"] == "2025-04-30"
        assert meta["training_window"]["n_sessions"] == 6


def test_train_all_uses_the_configured_registry(tmp_path):
    overrides = small_training_overrides(n_symbols=6, sessions=5)
    overrides["paths"] = {"registry": str(tmp_path / "reg")}
    overrides["horizons"] = {"minutes": [5, 10]}
    with use_config(overrides):
        summary = train_all(families=["lightgbm"], progress=False)
        assert summary.registry == tmp_path / "reg"
        assert [r["target"] for r in summary.rows] == ["ret_5m", "ret_10m"]
        assert R.active_version("ret_10m", "lightgbm") == "v0001"
        assert "10m" in summary.table()
