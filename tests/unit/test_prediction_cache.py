"""The inference cache: keyed by model version and the input's content; what it serves is the model's output."""

from __future__ import annotations

import numpy as np

from assets.predictions.cache import PredictionCache, input_digest


class CountingModel:
    def __init__(self, scale: float):
        self.scale, self.calls = scale, 0

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.calls += 1
        return X.reshape(len(X), -1).sum(axis=1) * self.scale


def test_same_input_is_served_from_memory_and_from_disk(tmp_path):
    model = CountingModel(2.0)
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    cache = PredictionCache(tmp_path)
    assert cache.predict("ret_5m", "lightgbm", "v1", model.predict, X).tolist() == [6.0, 14.0]
    assert cache.predict("ret_5m", "lightgbm", "v1", model.predict, X.copy()).tolist() == [6.0, 14.0]
    assert (model.calls, cache.hits, cache.misses) == (1, 1, 1)
    assert cache.save() == 1 and len(list((tmp_path / "ret_5m__lightgbm__v1").glob("*.npz"))) == 1
    again = PredictionCache(tmp_path)
    out = again.predict("ret_5m", "lightgbm", "v1", model.predict, X)
    assert out.tolist() == [6.0, 14.0] and model.calls == 1 and again.hits == 1
    out[0] = -1.0                                   # a caller writing into its result never alters the cache
    assert again.predict("ret_5m", "lightgbm", "v1", model.predict, X).tolist() == [6.0, 14.0]


def test_another_version_or_another_input_is_computed():
    model = CountingModel(1.0)
    cache = PredictionCache(None)
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    cache.predict("ret_5m", "lightgbm", "v1", model.predict, X)
    cache.predict("ret_5m", "lightgbm", "v2", model.predict, X)                  # new version
    cache.predict("ret_5m", "lightgbm", "v1", model.predict, X[:1])              # new universe
    cache.predict("ret_5m", "lightgbm", "v1", model.predict, X + 1e-12)          # one feature moved
    cache.predict("ret_5m", "lightgbm", "v1", model.predict, X.reshape(1, 2, 2))  # same bytes, other shape
    assert model.calls == 5 and cache.hits == 0 and cache.save() == 0          # no root: nothing written


def test_digest_depends_on_shape_and_bits_only():
    X = np.arange(6, dtype=float).reshape(2, 3)
    assert input_digest(X) == input_digest(np.asfortranarray(X)) == input_digest(X.astype(np.float32))
    assert input_digest(X) != input_digest(X.reshape(3, 2))
    assert input_digest(np.array([0.0])) != input_digest(np.array([-0.0]))
