import datetime as dt

import pandas as pd
import pytest

from resources.market.calendar import bar_key, get_calendar, parse_bar_key


def test_half_day_and_holiday():
    cal = get_calendar()
    half = cal.session_bars(dt.date(2026, 11, 27))
    assert len(half) == 42
    assert half[-1].tz_convert("America/New_York").strftime("%H:%M") == "13:00"
    assert dt.date(2026, 11, 26) not in cal.sessions("2026-11-25", "2026-11-30")
    with pytest.raises(ValueError, match="not a XNYS trading session"):
        cal.session_bars(dt.date(2026, 11, 26))
    assert len(cal.session_bars(dt.date(2026, 11, 24))) == 78


def test_keys_name_the_bar_close_in_utc():
    ts = pd.Timestamp("2026-11-24 09:35", tz="America/New_York")
    assert bar_key(ts) == "2026-11-24T14:35Z"
    assert parse_bar_key("2026-11-24T14:35Z") == ts
    with pytest.raises(ValueError, match="YYYY-MM-DDTHH:MMZ"):
        parse_bar_key("2026-11-24 14:35")


def test_latest_closed_bar_and_previous_bars_cross_sessions():
    cal = get_calendar()
    assert cal.latest_closed_bar(pd.Timestamp("2026-11-24 15:02", tz="UTC")) == pd.Timestamp(
        "2026-11-24 15:00", tz="UTC")
    # Thanksgiving: the latest bar is Wednesday's close.
    assert cal.latest_closed_bar(pd.Timestamp("2026-11-26 18:00", tz="UTC")) == pd.Timestamp(
        "2026-11-25 21:00", tz="UTC")
    prev = cal.previous_bars(parse_bar_key("2026-11-24T14:35Z"), 3)
    assert [bar_key(t) for t in prev] == ["2026-11-23T20:55Z", "2026-11-23T21:00Z", "2026-11-24T14:35Z"]


@pytest.mark.parametrize("minutes, bars", [(1, 390), (5, 78), (15, 26), (60, 7)])
def test_bar_interval_is_configurable(minutes, bars):
    from CONFIG.config_loader import use_config

    with use_config({"market": {"bar_minutes": minutes, "history_bars": 402}, "horizons": {"minutes": [60]},
                     "barrier": {"horizon_minutes": 60}}):
        cal = get_calendar()
        closes = cal.session_bars(dt.date(2026, 11, 24))
        assert len(closes) == bars == cal.bars_per_full_session()
        assert closes[-1] == pd.Timestamp("2026-11-24 16:00", tz="America/New_York")  # the close is a bar


def _local(closes) -> list[str]:
    return [t.strftime("%H:%M") for t in closes.tz_convert("America/New_York")]


@pytest.mark.parametrize("alignment, full, half", [
    # vendors (Polygon, Alpaca, IBKR useRTH) publish clock-aligned hourly bars: the first one is 30 minutes
    ("clock", ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00"], ["10:00", "11:00", "12:00", "13:00"]),
    ("session", ["10:30", "11:30", "12:30", "13:30", "14:30", "15:30", "16:00"], ["10:30", "11:30", "12:30", "13:00"]),
])
def test_hourly_grid_matches_vendor_bars_full_and_half_days(alignment, full, half):
    from CONFIG.config_loader import use_config

    with use_config({"market": {"bar_minutes": 60, "bar_alignment": alignment}, "horizons": {"minutes": [60]},
                     "barrier": {"horizon_minutes": 60}}):
        cal = get_calendar()
        assert _local(cal.session_bars(dt.date(2026, 11, 24))) == full
        assert _local(cal.session_bars(dt.date(2026, 11, 27))) == half  # the day after Thanksgiving: 13:00 close
        closes, opens, days = cal.bar_grid("2026-11-24", "2026-11-27")
        assert len(closes) == 7 + 7 + len(half) and (closes > opens).all()
        assert _local(opens[:2]) == ["09:30", full[0]]  # a bar opens at the previous close, the first at the open
        assert list(days[:7]) == [dt.date(2026, 11, 24)] * 7
        frac = cal.session_fraction(cal.session_bars(dt.date(2026, 11, 24)))
        assert frac[0] == (0.5 if alignment == "clock" else 1.0) / 6.5 and frac[-1] == 1.0


def test_clock_and_session_grids_agree_for_minute_bars():
    from CONFIG.config_loader import use_config

    for minutes in (1, 5, 15):
        grids = []
        for alignment in ("clock", "session"):
            with use_config({"market": {"bar_minutes": minutes, "bar_alignment": alignment, "history_bars": 402},
                             "horizons": {"minutes": [60]}, "barrier": {"horizon_minutes": 60}}):
                grids.append(get_calendar().bar_closes("2026-11-23", "2026-11-30"))
        assert grids[0].equals(grids[1])


def test_cached_session_table_answers_like_exchange_calendars(tg_home):
    """Cold (built from exchange_calendars, cache written) and warm (read from the cache file) agree."""
    from resources.market import calendar as calmod

    cal = get_calendar()
    cache_dir = calmod.resolve_path("paths.var_dir") / "cache"
    calmod._session_table.cache_clear()
    for f in cache_dir.glob("calendar-*.npz"):
        f.unlink()
    cold = cal.bar_closes("2025-06-02", "2026-12-31")
    assert len(list(cache_dir.glob("calendar-*.npz"))) == 1
    calmod._session_table.cache_clear()
    calmod._session_bars.cache_clear()
    warm = cal.bar_closes("2025-06-02", "2026-12-31")
    assert cold.equals(warm) and len(warm) == 30942
    import exchange_calendars as xc

    x = xc.get_calendar("XNYS", start="2025-06-02", end="2026-12-31")
    assert cal.sessions("2025-06-02", "2026-12-31") == [d.date() for d in x.sessions]
    frac = cal.session_fraction(cal.session_bars(dt.date(2026, 11, 27)))
    assert frac[-1] == 1.0 and frac[0] == 5 / 210  # the half day: 13:00 close, 210 minutes
    with pytest.raises(ValueError, match="outside the calendar's range"):
        cal.sessions("2020-01-01", "2020-01-10")


def test_bar_keys_is_bar_key_of_each_time():
    from resources.market.calendar import bar_keys

    closes = get_calendar().bar_closes("2026-11-24", "2026-11-30")  # a half day inside
    assert bar_keys(closes) == [bar_key(t) for t in closes]
    assert bar_keys(closes.tz_convert("America/New_York")) == [bar_key(t) for t in closes]
    with pytest.raises(ValueError, match="naive"):
        bar_keys(closes.tz_localize(None))
