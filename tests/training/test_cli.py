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


def test_undefined_ic_is_explained_and_the_model_not_activated_unless_forced(tmp_path, capsys):
    """Issue 10: with fewer names than training.ic_min_symbols the IC is undefined; training printed "—" without
    saying why and activated the model anyway."""
    overrides = small_training_overrides(n_symbols=4, sessions=5)
    overrides["training"]["ic_min_symbols"] = 5
    overrides["horizons"] = {"minutes": [5]}
    with use_config(overrides):
        assert main(["--families", "lightgbm", "--registry", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "not activated" in out and "ret_5m/lightgbm v0001: validation IC undefined" in out
        assert "at most 4 names have both a label and a prediction" in out and "training.ic_min_symbols=5" in out
        assert R.active_version("ret_5m", "lightgbm", root=tmp_path) is None and R.registry_is_empty(root=tmp_path)
        meta = R.verify("ret_5m", "lightgbm", "v0001", root=tmp_path)
        assert meta["validation_ic"] is None and "fewer than training.ic_min_symbols=5" in meta["validation_ic_note"]
        assert main(["--families", "lightgbm", "--registry", str(tmp_path), "--force"]) == 0
        assert "activated by --force despite" in capsys.readouterr().out
        assert R.active_version("ret_5m", "lightgbm", root=tmp_path) == "v0001"  # the same content: same version


def test_a_model_below_the_minimum_validation_ic_is_published_but_not_activated(tmp_path):
    overrides = small_training_overrides(n_symbols=8, sessions=5)
    overrides["horizons"] = {"minutes": [5]}
    overrides["training"]["min_validation_ic"] = 0.99
    with use_config(overrides):
        summary = train_all(families=["lightgbm"], registry=tmp_path, progress=False)
        row = summary.rows[0]
        assert row["validation_ic"] < 0.99 and "below training.min_validation_ic=+0.9900" in row["not_activated"]
        assert R.list_versions("ret_5m", "lightgbm", root=tmp_path) == ["v0001"]
        assert R.active_version("ret_5m", "lightgbm", root=tmp_path) is None
