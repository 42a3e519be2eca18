"""Registry: round trips, immutability, the ACTIVE pointer, and every bad input rejected clearly."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from CONFIG.config_loader import use_config
from TRAINING import registry as R
from TRAINING.dataset import build_dataset
from TRAINING.labels import barrier_labels, demean, forward_returns, horizon_bars
from TRAINING.testing import small_training_overrides, train_small_registry
from TRAINING.train import _meta, _window_meta
from TRAINING.trainers.barrier import train_barrier_classifier
from TRAINING.trainers.common import time_split
from TRAINING.trainers.sequential import gather_windows, train_sequential
from TRAINING.trainers.tabular import train_lightgbm_regressor


@pytest.fixture(scope="module")
def trained():
    """One small model per family with its metadata, trained once for the module."""
    with use_config(small_training_overrides(n_symbols=10, sessions=8)):
        data = build_dataset()
        split = time_split(data.sessions)
        window = _window_meta(data, split)
        r = forward_returns(data.panel["close"], data.session_id, 1)
        names = list(data.feature_names)
        peak = barrier_labels(data.panel["close"], data.panel["high"], data.panel["low"],
                              data.market_column("sigma_bps"), data.session_id, horizon_bars(15))[0]
        models = {
            ("ret_5m", "lightgbm"): (5, train_lightgbm_regressor(data.X, demean(r), r, split, names)),
            ("ret_5m", "sequential"): (5, train_sequential(data.X, demean(r), r, split, names)),
            ("peak_15m", "barrier_lightgbm"): (15, train_barrier_classifier(data.X, peak, split, names)),
        }
        yield data, {k: (m, _meta(data, window, h, m, "test")) for k, (h, m) in models.items()}


def _publish(root, trained, key=("ret_5m", "lightgbm"), **kw):
    model, meta = trained[1][key]
    return R.publish(*key, model.model_bytes, meta, root=root, **kw)


def _writable(path):
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("key", [("ret_5m", "lightgbm"), ("ret_5m", "sequential"), ("peak_15m", "barrier_lightgbm")])
def test_round_trip_predicts_what_training_validated(tmp_path, trained, key):
    data, models = trained
    model, meta = models[key]
    version = R.publish(*key, model.model_bytes, meta, root=tmp_path)
    assert version == "v0001" and R.active_version(*key, root=tmp_path) == "v0001"
    loaded = R.load(*key, root=tmp_path)
    for field in R.REQUIRED_META:
        assert field in loaded.meta
    assert loaded.meta["model_sha256"] == R.sha256_bytes(model.model_bytes)
    assert loaded.meta["feature_set_version"] == data.feature_version
    b, s = np.nonzero(np.isfinite(model.valid_pred))
    if loaded.kind == "sequential":
        x = gather_windows(data.X, b, s, loaded.T)
    else:
        x = data.X[b, s]
    np.testing.assert_array_equal(loaded.predict(x), model.valid_pred[b, s])
    assert R.verify(*key, root=tmp_path)["target"] == key[0]


def test_predict_gives_nan_for_non_finite_rows_and_checks_shapes(tmp_path, trained):
    data, _ = trained
    _publish(tmp_path, trained)
    loaded = R.load("ret_5m", "lightgbm", root=tmp_path)
    x = data.X[-1].copy()
    x[0, 3] = np.nan
    out = loaded.predict(x)
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="expects"):
        loaded.predict(x[:, :5])


def test_versions_are_immutable(tmp_path, trained):
    assert _publish(tmp_path, trained) == "v0001"
    assert _publish(tmp_path, trained) == "v0001"  # identical content: the existing version
    v1 = tmp_path / "ret_5m" / "lightgbm" / "v0001"
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    assert all(p.stat().st_mode & 0o222 == 0 for p in v1.iterdir())
    model, meta = trained[1][("ret_5m", "lightgbm")]
    v2 = R.publish("ret_5m", "lightgbm", model.model_bytes, {**meta, "validation_ic": 0.5}, root=tmp_path)
    assert v2 == "v0002"
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == before
    assert R.list_versions("ret_5m", "lightgbm", root=tmp_path) == ["v0001", "v0002"]
    assert R.active_version("ret_5m", "lightgbm", root=tmp_path) == "v0002"
    assert R.load("ret_5m", "lightgbm", "v0001", root=tmp_path).meta["validation_ic"] == meta["validation_ic"]
    v3 = R.publish("ret_5m", "lightgbm", model.model_bytes, {**meta, "validation_ic": 0.6}, root=tmp_path,
                   activate=False)
    assert v3 == "v0003" and R.active_version("ret_5m", "lightgbm", root=tmp_path) == "v0002"
    assert not list((tmp_path / "ret_5m" / "lightgbm").glob(".staging-*"))


def test_checksum_mismatch(tmp_path, trained):
    _publish(tmp_path, trained)
    path = _writable(tmp_path / "ret_5m" / "lightgbm" / "v0001" / "model.txt")
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(R.RegistryError, match=r"model\.txt: checksum mismatch"):
        R.load("ret_5m", "lightgbm", root=tmp_path)
    with pytest.raises(R.RegistryError, match="checksum mismatch"):
        R.set_active("ret_5m", "lightgbm", "v0001", root=tmp_path)


def _rewrite_meta(root, change, key=("ret_5m", "lightgbm")):
    path = _writable(root / key[0] / key[1] / "v0001" / R.META_FILE)
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("field", ["features", "model_sha256", "horizon_minutes", "validation_ic"])
def test_metadata_missing_a_field(tmp_path, trained, field):
    _publish(tmp_path, trained)
    _rewrite_meta(tmp_path, lambda m: m.pop(field))
    with pytest.raises(R.RegistryError, match=rf"model_meta\.json: metadata missing field\(s\) \['{field}'\]"):
        R.load("ret_5m", "lightgbm", root=tmp_path)


def test_sequential_without_architecture(tmp_path, trained):
    _publish(tmp_path, trained, ("ret_5m", "sequential"))
    _rewrite_meta(tmp_path, lambda m: m.pop("architecture"), ("ret_5m", "sequential"))
    with pytest.raises(R.RegistryError, match="architecture"):
        R.load("ret_5m", "sequential", root=tmp_path)


def test_feature_list_mismatch(tmp_path, trained):
    _publish(tmp_path, trained)
    with use_config({"features": {"return_lookbacks": [1, 2, 3]}}):
        with pytest.raises(R.RegistryError, match="feature list does not match the current feature set"):
            R.load("ret_5m", "lightgbm", root=tmp_path)
    with use_config({"features": {"version": "fs-9.9"}}):
        with pytest.raises(R.RegistryError, match="fs-9.9"):
            R.load("ret_5m", "lightgbm", root=tmp_path)
    with use_config({"market": {"bar_minutes": 15}, "horizons": {"minutes": [15, 30]},
                     "barrier": {"horizon_minutes": 15}}):
        with pytest.raises(R.RegistryError, match="trained on 5m bars, configuration has 15m"):
            R.load("ret_5m", "lightgbm", root=tmp_path)
    _rewrite_meta(tmp_path, lambda m: m["features"].reverse())
    with pytest.raises(R.RegistryError, match="feature list"):
        R.load("ret_5m", "lightgbm", root=tmp_path)


@pytest.mark.parametrize("key", [("ret_5m", "lightgbm"), ("ret_5m", "sequential")])
def test_unreadable_model_file(tmp_path, trained, key):
    _publish(tmp_path, trained, key)
    d = tmp_path / key[0] / key[1] / "v0001"
    model_file = _writable(next(p for p in d.iterdir() if p.name.startswith("model.")))
    model_file.write_bytes(b"not a model")
    _rewrite_meta(tmp_path, lambda m: m.update(model_sha256=R.sha256_bytes(b"not a model")), key)
    with pytest.raises(R.RegistryError, match=rf"{model_file.name}: unreadable model file"):
        R.load(*key, root=tmp_path)
    model_file.unlink()
    with pytest.raises(R.RegistryError, match=rf"{model_file.name}: unreadable model file"):
        R.load(*key, root=tmp_path)


def test_corrupt_metadata_and_missing_pointer(tmp_path, trained):
    with pytest.raises(R.RegistryError, match="no active version"):
        R.load("ret_5m", "lightgbm", root=tmp_path)
    _publish(tmp_path, trained, activate=False)
    with pytest.raises(R.RegistryError, match="ACTIVE: no active version"):
        R.load("ret_5m", "lightgbm", root=tmp_path)
    with pytest.raises(R.RegistryError, match="v0007 of ret_5m/lightgbm does not exist"):
        R.load("ret_5m", "lightgbm", "v0007", root=tmp_path)
    _writable(tmp_path / "ret_5m" / "lightgbm" / "v0001" / R.META_FILE).write_text("{not json")
    with pytest.raises(R.RegistryError, match=r"model_meta\.json: unreadable metadata"):
        R.load("ret_5m", "lightgbm", "v0001", root=tmp_path)


def test_publish_rejects_bad_input(tmp_path, trained):
    model, meta = trained[1][("ret_5m", "lightgbm")]
    window = meta["training_window"]
    bad = {
        "not a positive multiple": ("ret_7m", {**meta, "horizon_minutes": 7}),
        "empty or all-NaN": ("ret_5m", {**meta, "training_window": {**window, "train_rows": 0}}),
        "empty training window": ("ret_5m", {**meta, "training_window": {}}),
        "does not match horizon": ("ret_10m", meta),
        "feature list": ("ret_5m", {**meta, "features": meta["features"][:-1]}),
        "must be a finite number or null": ("ret_5m", {**meta, "validation_ic": float("nan")}),
    }
    for message, (target, m) in sorted(bad.items()):
        with pytest.raises(R.RegistryError, match=message):
            R.publish(target, "lightgbm", model.model_bytes, m, root=tmp_path)
    with pytest.raises(R.RegistryError, match="empty model file"):
        R.publish("ret_5m", "lightgbm", b"", meta, root=tmp_path)
    with pytest.raises(R.RegistryError, match="does not serve"):
        R.publish("peak_15m", "lightgbm", model.model_bytes, meta, root=tmp_path)
    with pytest.raises(R.RegistryError, match="not one of"):
        R.publish("ret_5m", "xgboost", model.model_bytes, meta, root=tmp_path)
    assert R.registry_is_empty(root=tmp_path) and R.list_models(root=tmp_path) == []


def test_train_small_registry(tmp_path):
    t0 = time.perf_counter()
    root = train_small_registry(tmp_path)
    assert time.perf_counter() - t0 < 30
    assert not R.registry_is_empty(root=root)
    pairs = R.list_models(root=root)
    assert len(pairs) == 2 * 5 + 2
    for target, family in pairs:
        loaded = R.load(target, family, root=root)
        assert loaded.meta["training_window"]["n_sessions"] == 8
