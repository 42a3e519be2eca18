import datetime as dt
import json
import os

import pytest

from TRAINING.common.utils.determinism_ordering import sorted_items
from TRAINING.common.utils.file_utils import read_json, write_atomic_json


def test_write_atomic_json_is_canonical(tmp_path):
    p = write_atomic_json(tmp_path / "s.json", {"b": 1, "a": dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)})
    text = p.read_text()
    assert text.index('"a"') < text.index('"b"')
    assert json.loads(text)["a"] == "2026-11-24T09:30:00Z"


def test_crash_between_write_and_rename_keeps_old_file(tmp_path, monkeypatch):
    tmp_path = tmp_path / "state"
    target = tmp_path / "state.json"
    write_atomic_json(target, {"state": "ACTIVE"})

    def crash(*_args, **_kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_atomic_json(target, {"state": "HALTED"})
    assert read_json(target) == {"state": "ACTIVE"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_naive_datetimes_and_nan_are_refused(tmp_path):
    with pytest.raises(ValueError, match="naive"):
        write_atomic_json(tmp_path / "x.json", {"t": dt.datetime(2026, 1, 1)})
    with pytest.raises(ValueError):
        write_atomic_json(tmp_path / "x.json", {"v": float("nan")})


def test_corrupt_state_file_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(p)


def test_sorted_items_ignores_insertion_order():
    a = {"b": 2, "a": 1, "c": 3}
    b = {"c": 3, "a": 1, "b": 2}
    assert sorted_items(a) == sorted_items(b) == [("a", 1), ("b", 2), ("c", 3)]
    assert sorted_items({10: "x", 5: "y"}) == [(5, "y"), (10, "x")]
    mixed = sorted_items({"z": 1, 3: 2})
    assert mixed == sorted_items({3: 2, "z": 1})
