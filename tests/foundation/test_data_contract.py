"""The files data contract (SPEC §10): a file in another time zone, stamp convention, bar interval or grid than
configured is refused with a diagnosis naming the file, what was seen and the key to set; never shifted."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from CONFIG.config_loader import use_config
from dagster_project.commands import cli
from resources.market.calendar import get_calendar
from resources.market.contract import Convention, diagnose, read_times
from resources.market.files import FilesSource
from resources.market.sources import DataError

SESSIONS = ("2025-06-03", "2025-06-05")  # New York summer time: UTC−4


def bars_on_grid(minutes: int = 5, alignment: str = "clock", symbol: str = "AAA", seed: int = 1,
                 sessions: tuple[str, str] = SESSIONS) -> pd.DataFrame:
    """A random-walk file on the calendar's grid: ``ts`` = UTC bar close (written with +00:00)."""
    with use_config({"market": {"bar_minutes": minutes, "bar_alignment": alignment, "history_bars": 402},
                     "horizons": {"minutes": [60]}, "barrier": {"horizon_minutes": 60}}):
        closes = get_calendar().bar_closes(*sessions)
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(closes))))
    open_ = np.r_[close[0], close[:-1]]
    high, low = np.maximum(open_, close) * 1.0005, np.minimum(open_, close) * 0.9995
    return pd.DataFrame({"ts": closes, "open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.integers(1000, 5000, len(closes)).astype(float),
                         "bid": close * 0.9999, "ask": close * 1.0001}).assign(symbol=symbol)


def write(tmp_path, frame: pd.DataFrame, ts_text=None, name: str = "AAA") -> str:
    d = tmp_path / "bars"
    d.mkdir(exist_ok=True)
    out = frame.drop(columns="symbol")
    out["ts"] = ts_text if ts_text is not None else out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    out.to_csv(d / f"{name}.csv", index=False)
    return str(d)


def wall(ts: pd.Series, zone: str) -> pd.Series:
    """Naive wall-clock text of UTC instants in ``zone`` (what many vendors write)."""
    return ts.dt.tz_convert(zone).dt.tz_localize(None).dt.strftime("%Y-%m-%d %H:%M:%S")


def _over(market: dict) -> dict:
    over = {"market": dict(market)} if market else {}
    if market.get("bar_minutes", 5) != 5:
        over.update({"horizons": {"minutes": [60]}, "barrier": {"horizon_minutes": 60}})
        over["market"].setdefault("history_bars", 402)  # a session of 1-minute bars + the sequence window
    return over


def refused(tmp_path, frame, ts_text=None, **market) -> str:
    over = _over(market)
    with use_config(over), pytest.raises(DataError) as err:
        FilesSource(write(tmp_path, frame, ts_text))
    return str(err.value)


def accepted(tmp_path, frame, ts_text=None, **market) -> FilesSource:
    over = _over(market)
    with use_config(over):
        return FilesSource(write(tmp_path, frame, ts_text))


@pytest.mark.parametrize("zone, shift", [("America/New_York", "4 h early"), ("Europe/London", "1 h late"),
                                         ("Asia/Kolkata", "5 h 30 min late")])
def test_naive_wall_time_of_another_zone_read_as_utc_is_refused_naming_the_zone(tmp_path, zone, shift):
    f = bars_on_grid()
    msg = refused(tmp_path, f, wall(f["ts"], zone))
    assert "AAA.csv" in msg and f"looks like {zone} wall time" in msg
    assert f"market.files_timezone: {zone}" in msg and f"the rows sit {shift}" in msg
    src = accepted(tmp_path, f, wall(f["ts"], zone), files_timezone=zone)  # set as told: every row is a bar
    assert src.skips.empty and src.history(f["ts"].iloc[-1], 300)["ts"].tolist() == f["ts"].tolist()


def test_utc_wall_time_read_as_new_york_is_refused(tmp_path):
    f = bars_on_grid()
    msg = refused(tmp_path, f, wall(f["ts"], "UTC"), files_timezone="America/New_York")
    assert "looks like UTC wall time" in msg and "market.files_timezone: UTC" in msg and "4 h late" in msg


def test_fixed_offset_zone_is_read(tmp_path):
    f = bars_on_grid()
    text = (f["ts"] + pd.Timedelta(hours=-3)).dt.tz_localize(None).dt.strftime("%Y-%m-%d %H:%M")
    assert "market.files_timezone: -03:00" in refused(tmp_path, f, text)  # no named zone of the list is −3 in June
    src = accepted(tmp_path, f, text, files_timezone="-03:00")
    assert src.skips.empty and len(src.history(f["ts"].iloc[-1], 300)) == len(f)


def test_offsets_written_in_the_file_win_and_a_wrong_offset_is_named(tmp_path):
    f = bars_on_grid()
    ny = f["ts"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    assert accepted(tmp_path, f, ny, files_timezone="Asia/Tokyo").skips.empty  # the written offset is used
    msg = refused(tmp_path, f, wall(f["ts"], "America/New_York") + "+00:00")
    assert "carry UTC offsets" in msg and "America/New_York" in msg and "fix the offsets" in msg


def test_bars_stamped_at_their_open_are_refused_and_read_when_configured(tmp_path):
    f = bars_on_grid()
    opens = f.assign(ts=f["ts"] - pd.Timedelta(minutes=5))
    msg = refused(tmp_path, opens)
    assert "stamped at their open" in msg and "market.files_stamp: open" in msg
    src = accepted(tmp_path, opens, files_stamp="open")
    assert src.history(f["ts"].iloc[-1], 300)["ts"].tolist() == f["ts"].tolist()  # mapped to the bar closes
    assert "market.files_stamp: close" in refused(tmp_path, f, files_stamp="open")


@pytest.mark.parametrize("file_minutes, configured, says", [
    (1, 5, "looks like 1-minute bars"), (5, 1, "looks like 5-minute bars"), (5, 15, "looks like 5-minute bars"),
    (5, 60, "looks like 5-minute bars"), (60, 5, "looks like 60-minute bars"), (15, 5, "looks like 15-minute bars"),
])
def test_a_file_at_another_bar_interval_is_refused(tmp_path, file_minutes, configured, says):
    f = bars_on_grid(file_minutes)
    msg = refused(tmp_path, f, bar_minutes=configured)
    assert says in msg and f"market.bar_minutes: {file_minutes}" in msg


def test_hourly_vendor_bars_load_on_the_clock_grid_and_are_refused_on_the_session_grid(tmp_path):
    f = bars_on_grid(60, "clock")
    assert [t.strftime("%H:%M") for t in f["ts"].dt.tz_convert("America/New_York")[:7]] == [
        "10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00"]
    src = accepted(tmp_path, f, bar_minutes=60)
    assert src.skips.empty and len(src.history(f["ts"].iloc[-1], 30)) == len(f)
    msg = refused(tmp_path, f, bar_minutes=60, bar_alignment="session")
    assert "market.bar_alignment: clock" in msg


def test_a_file_covering_part_of_the_session_is_accepted_with_a_warning(tmp_path):
    f = bars_on_grid()
    local = f["ts"].dt.tz_convert("America/New_York")
    part = f[(local.dt.hour >= 10) & (local.dt.hour < 15)].reset_index(drop=True)
    src = accepted(tmp_path, part)
    d = src.diagnoses[0]
    assert d.verdict == "warn" and d.stamp == "unknown" and "cannot be checked" in d.findings[0]
    assert src.skips.empty


def test_rows_outside_the_calendars_range_are_skips_and_a_file_wholly_outside_is_refused(tmp_path):
    f = bars_on_grid()
    early = f.iloc[:3].assign(ts=f["ts"].iloc[:3] - pd.Timedelta(days=3650))  # 2015: before the calendar
    src = accepted(tmp_path, pd.concat([early, f], ignore_index=True))
    assert src.skips[["rule", "rows"]].values.tolist() == [["outside the calendar's range", 3]]
    msg = refused(tmp_path, early)
    assert "outside the calendar's range" in msg and "market.partitions_start" in msg


def test_extended_hours_rows_are_skips_of_an_accepted_file(tmp_path):
    f = bars_on_grid()
    pre = f[f["ts"].dt.date == f["ts"].dt.date.iloc[0]].iloc[:60].assign(
        ts=lambda g: g["ts"] - pd.Timedelta(hours=6))  # 03:35 … 08:30 New York
    src = accepted(tmp_path, pd.concat([pre, f], ignore_index=True).sort_values("ts"), files_min_grid_share=0.99)
    assert src.diagnoses[0].verdict == "warn" and set(src.skips["rule"]) == {"outside the regular session"}
    assert src.skips["rows"].sum() == 60


def test_diagnose_is_pure_and_reports_what_it_saw():
    f = bars_on_grid()
    cal = get_calendar()
    diag, _ = diagnose("x.csv", "AAA", read_times(wall(f["ts"], "America/New_York")), cal,
                       Convention("America/New_York", "close", 5), 0.9, 0.5)
    assert (diag.verdict, diag.rows, diag.sessions, diag.interval_minutes, diag.stamp, diag.timezone) == (
        "ok", len(f), 3, 5.0, "close", "America/New_York")
    assert diag.grid_share == 1.0 and diag.coverage == 1.0
    bad, _ = diagnose("x.csv", "AAA", read_times(wall(f["ts"], "America/New_York")), cal,
                      Convention("UTC", "close", 5), 0.9, 0.5)
    assert bad.verdict == "refused" and bad.timezone == "America/New_York" and bad.error.startswith("x.csv: ")


def test_data_check_command_prints_each_file_and_exits_1_on_a_refusal(tmp_path, capsys):
    f = bars_on_grid()
    d = write(tmp_path, f)
    assert cli.main(["data", "check", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "AAA.csv  [OK]" in out and "interval 5 min" in out and "1 accepted, 0 refused" in out
    write(tmp_path, bars_on_grid(symbol="BBB"), wall(f["ts"], "America/New_York"), name="BBB")
    assert cli.main(["data", "check", "--dir", d]) == 1
    out = capsys.readouterr().out
    assert "BBB.csv  [REFUSED]" in out and "market.files_timezone: America/New_York" in out


def test_the_engine_refuses_at_load_naming_the_first_refused_file(tmp_path):
    f = bars_on_grid()
    d = write(tmp_path, f)
    write(tmp_path, bars_on_grid(symbol="BBB"), wall(f["ts"], "America/New_York"), name="BBB")
    with pytest.raises(DataError, match=r"BBB\.csv: .*America/New_York.*tradegraph data check"):
        FilesSource(d)
    assert dt.date(2025, 6, 3) in get_calendar().sessions("2025-06-02", "2025-06-06")


def _scaled(frame: pd.DataFrame, at: pd.Timestamp, price: float = 1.0, volume: float = 1.0) -> pd.DataFrame:
    out = frame.copy()
    hit = out["ts"] >= at
    out.loc[hit, ["open", "high", "low", "close", "bid", "ask"]] *= price
    out.loc[hit, "volume"] *= volume
    return out


@pytest.mark.parametrize("scale", [100.0, 0.01, 1000.0])
def test_a_lasting_unit_change_is_skipped_to_the_end_of_the_file_never_accepted(tmp_path, scale):
    f = bars_on_grid()
    at = f["ts"].iloc[30]  # mid-session of 2025-06-03: every price × scale from there on (a vendor in cents)
    src = accepted(tmp_path, _scaled(f, at, price=scale))
    from assets.bars.quality import RULE_LEVEL
    level = src.skips[src.skips["rule"] == RULE_LEVEL]
    assert len(level) == len(f) - 33 and (pd.DatetimeIndex(level["ts"]) > f["ts"].iloc[32]).all()
    assert len(src.skips) == len(f) - 30 and not len(src.flags)  # every later row recorded, nothing accepted
    assert (src.history(f["ts"].iloc[-1], 400)["ts"] < at).all()


@pytest.mark.parametrize("k", [2.0, 3.0, 4.0, 5.0, 10.0, 1.5, 0.5, 0.25, 0.2, 0.1])
def test_an_unadjusted_split_at_an_open_holds_the_symbol_whatever_the_volume(tmp_path, k):
    f = bars_on_grid()
    f["volume"] = 2000.0
    first = f["ts"].dt.date != f["ts"].shift().dt.date
    f.loc[first, "volume"] = 6000.0  # a session's first bar trades ~3× the intraday median (the U shape)
    at = f["ts"][f["ts"].dt.date == dt.date(2025, 6, 4)].iloc[0]  # the second session's first bar
    f.loc[f["ts"] == at, "open"] = f.loc[f["ts"] == f["ts"][f["ts"] < at].iloc[-1], "close"].to_numpy()
    f.loc[f["ts"] == at, "high"] = f.loc[f["ts"] == at, ["open", "close", "high"]].max(axis=1)
    f.loc[f["ts"] == at, "low"] = f.loc[f["ts"] == at, ["open", "close", "low"]].min(axis=1)
    for volume in (k, 1.0):  # volume × k (a real split) or unchanged
        src = accepted(tmp_path, _scaled(f, at, price=1 / k, volume=volume))
        assert src.flags[["symbol", "split_ratio"]].values.tolist() == [["AAA", k]]
        assert pd.Timestamp(src.flags["ts"].iloc[0]) == at and "1/" in src.flags["reason"].iloc[0]
        assert not len(src.skips)  # no row is skipped as a jump: later rows are compared on the new level


@pytest.mark.parametrize("suffix", ["Z", "+00:00", "-04:00"])
def test_hourly_clock_bars_stamped_at_their_open_with_offsets_name_files_stamp(tmp_path, suffix):
    # issue: refused with "the rows sit 0 h late … fix the offsets in the file" although the offsets are right
    f = bars_on_grid(60, "clock")
    opens = f["ts"] - pd.Timedelta(hours=1)
    first = f["ts"].dt.tz_convert("America/New_York").dt.strftime("%H:%M") == "10:00"
    opens[first] = f["ts"][first] - pd.Timedelta(minutes=30)  # the session's first (partial) bar opens at 9:30
    zone = "UTC" if suffix != "-04:00" else "-04:00"
    text = opens.dt.tz_convert(zone).dt.strftime("%Y-%m-%dT%H:%M:%S") + suffix
    msg = refused(tmp_path, f, text, bar_minutes=60)
    assert "market.files_stamp: open" in msg and "fix the offsets" not in msg and "0 h" not in msg
    src = accepted(tmp_path, f, text, bar_minutes=60, files_stamp="open")
    assert src.history(f["ts"].iloc[-1], 30)["ts"].tolist() == f["ts"].tolist()


def test_a_partial_session_file_says_its_zone_cannot_be_checked(tmp_path):
    # 11:00–15:00 New York rows written as naive Chicago wall time and read as New York: every row still sits
    # on the grid inside the session (one hour early); the diagnosis must say the zone is unchecked, not only
    # the stamp. With offsets written in the file only the stamp is unchecked.
    f = bars_on_grid()
    local = f["ts"].dt.tz_convert("America/New_York")
    part = f[(local.dt.hour >= 11) & (local.dt.hour < 15)].reset_index(drop=True)
    src = accepted(tmp_path, part, wall(part["ts"], "America/Chicago"), files_timezone="America/New_York")
    d = src.diagnoses[0]
    assert d.verdict == "warn" and d.stamp == "unknown" and d.timezone == "America/New_York (unchecked)"
    assert "neither its time zone nor its stamp convention can be checked" in d.findings[0]
    assert "market.files_timezone: America/New_York" in d.findings[0]
    d = accepted(tmp_path, part).diagnoses[0]  # written with +00:00
    assert d.timezone == "offsets in the file" and "time zone" not in d.findings[0]
    assert "stamp convention cannot be checked" in d.findings[0]


def test_a_split_hold_lasts_beyond_the_window_until_an_entry_explains_it(tmp_path):
    # without an adjustments entry the book stays on the old share basis: once the jump left the window the
    # symbol was no longer held and its position was marked at the new basis (×4 for a 1:4 reverse split)
    from assets.bars.logic import build_window
    from assets.positions.stage import window_marks
    f = bars_on_grid()
    at = f["ts"][f["ts"].dt.date == dt.date(2025, 6, 4)].iloc[0]
    src = accepted(tmp_path, _scaled(f, at, price=4.0, volume=0.25))
    assert src.flags["split_ratio"].tolist() == [0.25]
    bar = f["ts"].iloc[-1]  # a session later: the jump is far outside a 6-bar window
    with use_config(_over({})):
        times = src.calendar.previous_bars(bar, 6)
        window, _ = build_window("late", bar, times, src.history(bar, 6), src.symbols(),
                                 pd.Series(1e6, index=src.symbols()), flags=src.flags_between(None, bar))
    snap = window.snapshot.set_index("symbol").loc["AAA"]
    assert "≈ 1/0.25" in snap["hold_reason"] and pd.Timestamp(snap["hold_since"]) == at
    last_good = float(f.loc[f["ts"] < at, "close"].iloc[-1])
    marks = window_marks(window, pd.Series({"AAA": last_good})).set_index("symbol").loc["AAA"]
    assert marks["mark"] == last_good and marks["stale"]  # the pre-jump mark, not a ×4 close of the window
    assert np.isnan(window_marks(window).set_index("symbol").loc["AAA", "mark"])
    entry = tmp_path / "adj.csv"
    entry.write_text("symbol,effective_date,split_ratio,cash_dividend\nAAA,2025-06-04,0.25,0\n")
    assert accepted(tmp_path, _scaled(f, at, price=4.0, volume=0.25), adjustments_file=str(entry)).flags.empty
