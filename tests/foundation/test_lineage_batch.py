"""The lineage flush's bulk assembly (issue 12): one frame per table per flush must record exactly what the
frame-by-frame writers record — rows, run-id stamps, content hashes, first-seen market bars."""

import numpy as np
import pandas as pd
import pytest

from resources.lineage.batch import assemble, first_seen, stamp_own
from resources.lineage.hashing import content_hash, segment_hashes
from resources.lineage.store import LineageStore, _with_keys

BARS = ["2025-06-03T13:35Z", "2025-06-03T13:40Z", "2025-06-03T13:45Z", "2025-06-03T13:50Z"]


def _orders(n: int, run: str | None = None, start: int = 0) -> pd.DataFrame:
    f = pd.DataFrame({"client_order_id": [f"o{start + i}" for i in range(n)], "quantity": np.arange(n, dtype=float),
                      "ts": pd.date_range("2025-06-03 13:35", periods=n, freq="5min", tz="UTC")})
    return f if run is None else f.assign(run_id=[run if i % 2 == 0 else "other" for i in range(n)])


def _reference(frames: list[pd.DataFrame], run_id: str | None) -> tuple[pd.DataFrame | None, list[int], list[str]]:
    own = [stamp_own(f, run_id) for f in frames] if run_id is not None else frames
    filled = [f for f in own if len(f)]
    return (pd.concat(filled, ignore_index=True) if filled else None, [len(f) for f in own],
            [content_hash(f) for f in own])


@pytest.mark.parametrize(("run_id", "frames"), [
    (None, [_orders(2), _orders(0), _orders(3, start=2), _orders(1, start=5)]),
    ("r1", [_orders(2), _orders(0), _orders(3, start=2), _orders(1, start=5)]),            # stamped in bulk
    ("r1", [_orders(3, "r1"), _orders(2, "r1", 3), _orders(0, "r1"), _orders(1, "r1", 9)]),  # others' rows dropped
    ("r1", [_orders(2), pd.DataFrame(), _orders(3).astype({"quantity": "int64"}), _orders(1)]),  # dtypes differ
    ("r1", [_orders(2), _orders(1, "r1"), _orders(0), _orders(2)]),                         # some carry run ids
    (None, [pd.DataFrame([[1.0, 2.0]], columns=["d", "d"])] * 2 + [pd.DataFrame()] * 2),    # duplicate names
    ("r1", [pd.DataFrame({"fill_id": pd.Series([], dtype=object)}), _orders(0), pd.DataFrame(), _orders(0)]),
])
def test_assemble_records_what_the_frames_one_by_one_record(run_id, frames):
    batch = assemble(BARS, frames, run_id)
    data, lengths, hashes = _reference(frames, run_id)
    assert batch.bars == BARS and batch.lengths.tolist() == lengths and batch.hashes == hashes
    if data is None:
        assert batch.data is None
    else:
        pd.testing.assert_frame_equal(batch.data, data, check_exact=True)


def test_assemble_stamps_and_filters_by_hand():
    batch = assemble(BARS[:3], [_orders(3, "r1"), _orders(2, "r1", 3), _orders(1, "other", 7)], "r1")
    assert batch.lengths.tolist() == [2, 1, 0]       # rows 0, 2 of the first; row 0 of the second; none of the third
    assert batch.data["client_order_id"].tolist() == ["o0", "o2", "o3"]
    assert set(batch.data["run_id"]) == {"r1"}
    stamped = assemble(BARS[:2], [_orders(2), _orders(1, start=2)], "r9")
    assert list(stamped.data.columns)[-1] == "run_id" and stamped.data["run_id"].tolist() == ["r9"] * 3


def test_assemble_refuses_mismatched_bars():
    with pytest.raises(ValueError, match="2 bars for 1 frames"):
        assemble(BARS[:2], [_orders(1)])


def test_segment_hashes_are_the_segments_content_hashes():
    whole = pd.DataFrame({"s": ["a", "b", None, "é", "c"], "x": [1.5, -0.0, np.nan, 2.0, 3.0],
                          "i": [1, 2, 3, 4, 5], "b": [True, False, True, True, False],
                          "t": pd.date_range("2025-01-01", periods=5, freq="5min", tz="UTC")})
    lengths = np.array([2, 0, 3])
    assert segment_hashes(whole, lengths) == [content_hash(whole.iloc[0:2].reset_index(drop=True)),
                                              content_hash(whole.iloc[0:0]), content_hash(whole.iloc[2:5])]
    with pytest.raises(ValueError, match="segments of 4 rows for a frame of 5"):
        segment_hashes(whole, np.array([4]))


def test_key_columns_are_numbered_per_bar():
    data = _with_keys(pd.DataFrame({"v": np.arange(6.0), "_row": 9, "bar": "x"}), ["a", "b", "c", "d"],
                      np.array([2, 1, 0, 3]))
    assert list(data.columns) == ["bar", "_row", "v"]
    assert data["bar"].tolist() == ["a", "a", "b", "d", "d", "d"]
    assert data["_row"].tolist() == [0, 1, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="sum to 5"):
        _with_keys(pd.DataFrame({"v": np.arange(6.0)}), ["a"], np.array([5]))


def _grid(times: pd.DatetimeIndex, symbols: list[str], bump: float = 0.0) -> pd.DataFrame:
    ts = np.repeat(times, len(symbols))
    sym = np.tile(symbols, len(times))
    close = np.arange(len(ts), dtype=float) + 100.0 + bump
    return pd.DataFrame({"ts": ts, "symbol": pd.array(sym, dtype="str"), "close": close})


def _slide(n: int = 6, width: int = 3, symbols: tuple[str, ...] = ("A", "B", "C")) -> list[pd.DataFrame]:
    times = pd.date_range("2025-06-03 13:30", periods=n + width, freq="5min", tz="UTC")
    return [_grid(times[k:k + width], list(symbols), bump=k) for k in range(n)]   # later windows revise values


def _expected(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return (pd.concat(frames, ignore_index=True).drop_duplicates(["ts", "symbol"], keep="first")
            .sort_values(["ts", "symbol"], kind="mergesort"))


def _gap(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Window 2 lacks a row of its overlap, window 3 then has it (a late bar): a key first seen in window 3."""
    frames = [f.copy() for f in frames]
    frames[2] = frames[2][~((frames[2]["symbol"] == "B") & (frames[2]["ts"] == frames[2]["ts"].max()))]
    frames[1] = frames[1][~((frames[1]["symbol"] == "B") & (frames[1]["ts"] == frames[2]["ts"].max()))]
    return frames


@pytest.mark.parametrize("make", [
    lambda: _slide(),                                                 # the replay's case: sliding windows
    lambda: _slide(width=1),                                          # no overlap
    lambda: _gap(_slide()),                                           # a key first seen in a later window
    lambda: [f.iloc[::-1].reset_index(drop=True) for f in _slide()],  # rows out of time order
    lambda: _slide()[:2] + [pd.concat([_slide()[2], _slide()[2].iloc[-1:]], ignore_index=True)],  # a key twice
    lambda: [_slide()[0], _slide()[0].iloc[:0], _slide()[3], _slide()[1]],   # an empty window, one going back
    lambda: [_slide()[0], _slide(symbols=("A", "B", "D"))[1]],       # a symbol that only a later window has
])
def test_first_seen_is_concat_drop_duplicates_sort(make):
    frames = make()
    got = first_seen(frames)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), _expected(frames).reset_index(drop=True),
                                  check_exact=True)


def test_first_seen_keeps_the_first_windows_values_by_hand():
    got = first_seen(_slide(n=2, width=2, symbols=("A",)))   # windows (t0, t1) then (t1, t2), values revised
    assert got["close"].tolist() == [100.0, 101.0, 102.0]     # t1 from the first window (101), not 101 + 1
    assert first_seen([]).empty


def test_one_bar_and_a_batch_write_the_same_rows(tmp_path):
    """``write_partition`` (a Dagster bar) and ``write_partitions`` (a flush) are one code path."""
    frames = {b: _orders(i + 1, start=10 * i) for i, b in enumerate(BARS)}
    one, many = LineageStore(tmp_path / "one.duckdb"), LineageStore(tmp_path / "many.duckdb")
    with one.connect() as con:
        for bar, frame in frames.items():
            one.write_partition(con, "executions_x", bar, frame)
        one.write_partition(con, "executions_x", BARS[1], _orders(0))   # an empty frame empties the bar
    with many.connect() as con:
        many.write_partitions(con, "executions_x", {**frames, BARS[1]: _orders(0)})
    sql = "SELECT * FROM executions_x ORDER BY bar, _row"
    pd.testing.assert_frame_equal(one.read_sql(sql), many.read_sql(sql), check_exact=True)
    assert one.read_sql(sql)["bar"].tolist() == [BARS[0]] + [BARS[2]] * 3 + [BARS[3]] * 4


def test_sliding_windows_take_the_fast_path():
    """The replay's windows contribute only their new rows (not a concatenation of every window)."""
    from resources.lineage.batch import _new_rows

    assert [len(p) for p in _new_rows(_slide(), "ts", "symbol")] == [9, 3, 3, 3, 3, 3]
    assert _new_rows(_gap(_slide()), "ts", "symbol") is None     # a late row: the general path


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", "string[python]", object,
                                   pd.StringDtype("python", na_value=np.nan)])
def test_segment_hashes_of_text_columns_equal_content_hash(dtype):
    """Text columns are joined by pyarrow: every pandas string dtype (a missing value as ``content_hash`` encodes
    it: ``\\x00`` for None/NaN, ``<NA>`` for ``pd.NA``), empty strings, separators and non-ASCII included."""
    values = ["a", None, "", "é", "x\x1fy", "\x00", "long" * 50, np.nan] * 3
    whole = pd.DataFrame({"s": pd.Series(values, dtype=dtype), "x": np.arange(24.0)})
    lengths = np.array([3, 0, 8, 13])
    ends = np.cumsum(lengths)
    expected = [content_hash(whole.iloc[a:b].reset_index(drop=True)) for a, b in zip(ends - lengths, ends, strict=True)]
    assert segment_hashes(whole, lengths) == expected
