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


@pytest.mark.parametrize("minutes, bars", [(1, 390), (5, 78), (15, 26), (60, 6)])
def test_bar_interval_is_configurable(minutes, bars):
    from CONFIG.config_loader import use_config

    with use_config({"market": {"bar_minutes": minutes}, "horizons": {"minutes": [60]},
                     "barrier": {"horizon_minutes": 60}}):
        cal = get_calendar()
        closes = cal.session_bars(dt.date(2026, 11, 24))
        # 60-minute bars: 10:30 … 15:30 and a last, shorter bar ending at the 16:00 close is not generated.
        assert len(closes) == bars


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
