"""Corporate actions (SPEC §10): the optional adjustments file and the factors it implies.

File (``market.adjustments_file``, CSV or Parquet), one row per action::

    symbol, effective_date, split_ratio, cash_dividend

``effective_date`` is the session on which the action takes effect (the ex-date: the first session that trades
on the new basis); ``split_ratio`` new shares per old share (2 for a 2-for-1 split, 0.1 for a 1-for-10 reverse
split; empty = 1); ``cash_dividend`` the cash paid per (pre-split) share on that date (empty = 0).

History is back-adjusted (the usual CRSP convention): a price before the effective date is multiplied by
``price_factor`` = (1 / split_ratio) × (1 − cash_dividend / P), P the last close before the effective date, and
a volume by ``split_ratio``; prices on or after it are untouched. Point in time: a window at bar t applies only
the actions effective on or before t's session (see :func:`assets.bars.logic.adjust_history`), so an action
announced later never changes what an earlier bar saw. The broker's book is adjusted on the effective date
(``PaperBroker.apply_corporate_action``), and lineage records each applied action.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resources.market.calendar import TradingCalendar
from resources.market.contract import DataError

ADJ_COLUMNS = ["symbol", "effective_date", "split_ratio", "cash_dividend"]
FACTOR_COLUMNS = ADJ_COLUMNS + ["effective_open", "prev_close", "price_factor", "volume_factor"]


def empty_adjustments() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series(dtype=object), "effective_date": pd.Series(dtype=object),
                         "split_ratio": pd.Series(dtype=float), "cash_dividend": pd.Series(dtype=float),
                         "effective_open": pd.Series(dtype="datetime64[ns, UTC]"),
                         "prev_close": pd.Series(dtype=float), "price_factor": pd.Series(dtype=float),
                         "volume_factor": pd.Series(dtype=float)})[FACTOR_COLUMNS]


def read_adjustments(path: str | Path, calendar: TradingCalendar) -> pd.DataFrame:
    """The validated actions of the file (``ADJ_COLUMNS`` + ``effective_open``), sorted by (symbol, date);
    a bad row is a :class:`DataError` naming the file, the row and ``market.adjustments_file``."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"market.adjustments_file {p} does not exist")
    raw = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    missing = [c for c in ("symbol", "effective_date") if c not in raw.columns]
    if missing or not ({"split_ratio", "cash_dividend"} & set(raw.columns)):
        raise DataError(f"{p}: an adjustments file needs columns {ADJ_COLUMNS} (market.adjustments_file)")
    frame = pd.DataFrame({
        "symbol": raw["symbol"].astype(str),
        "effective_date": pd.to_datetime(raw["effective_date"], errors="coerce").dt.date,
        "split_ratio": pd.to_numeric(raw.get("split_ratio", 1.0), errors="coerce"),
        "cash_dividend": pd.to_numeric(raw.get("cash_dividend", 0.0), errors="coerce"),
    })
    frame["split_ratio"] = frame["split_ratio"].fillna(1.0) if "split_ratio" in raw else 1.0
    frame["cash_dividend"] = frame["cash_dividend"].fillna(0.0) if "cash_dividend" in raw else 0.0
    bad = (frame["effective_date"].isna() | ~np.isfinite(frame["split_ratio"]) | (frame["split_ratio"] <= 0)
           | ~np.isfinite(frame["cash_dividend"]) | (frame["cash_dividend"] < 0)).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{p}: row {row}: {raw.iloc[row].to_dict()} is not an action (effective_date a date, "
                        "split_ratio > 0, cash_dividend ≥ 0)")
    if frame.duplicated(["symbol", "effective_date"]).any():
        row = int(np.argmax(frame.duplicated(["symbol", "effective_date"]).to_numpy()))
        raise DataError(f"{p}: row {row}: a second action for {frame['symbol'].iloc[row]} on "
                        f"{frame['effective_date'].iloc[row]} (merge them into one row)")
    opens = []
    for i, day in enumerate(frame["effective_date"]):  # a loop over the file's actions (a handful)
        try:
            if not calendar.is_session(day):
                raise ValueError(f"{day} is not a trading session")
            opens.append(calendar.bar_grid(day, day)[1][0])
        except ValueError as exc:
            raise DataError(f"{p}: row {i}: effective_date {day}: {exc} (the effective date is the first "
                            "session on the new basis)") from None
    frame["effective_open"] = pd.DatetimeIndex(opens, tz="UTC") if opens else pd.DatetimeIndex([], tz="UTC")
    return frame.sort_values(["symbol", "effective_date"], kind="mergesort").reset_index(drop=True)


def with_factors(actions: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The actions with ``prev_close`` (the symbol's last close in ``rows`` before the effective open),
    ``price_factor`` and ``volume_factor``. A dividend with no earlier close cannot be priced: its factor is
    the split's alone (the dividend is named in the returned ``prev_close`` = NaN)."""
    out = actions.copy()
    if out.empty:
        return empty_adjustments()
    r = rows[["ts", "symbol", "close"]].assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True).astype(
        "datetime64[ns, UTC]")).sort_values("ts", kind="mergesort")
    left = out.rename(columns={"effective_open": "ts"}).assign(
        ts=lambda f: pd.to_datetime(f["ts"], utc=True).astype("datetime64[ns, UTC]") - pd.Timedelta(1, "ns"))
    prev = pd.merge_asof(left.sort_values("ts", kind="mergesort"), r, on="ts", by="symbol", direction="backward")
    prev = prev.set_index(["symbol", "effective_date"])["close"]
    out["prev_close"] = prev.reindex(pd.MultiIndex.from_frame(out[["symbol", "effective_date"]])).to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        div = np.where(np.isfinite(out["prev_close"]) & (out["cash_dividend"] > 0),
                       1.0 - out["cash_dividend"] / out["prev_close"], 1.0)
    out["price_factor"] = (1.0 / out["split_ratio"]) * div
    out["volume_factor"] = out["split_ratio"].astype(float)
    return out[FACTOR_COLUMNS].reset_index(drop=True)


def forward_log_factor(symbols: np.ndarray, ts: np.ndarray, actions: pd.DataFrame) -> np.ndarray:
    """(R,) for rows (symbol, ts as datetime64[ns] UTC): Σ log(split_ratio) of the symbol's splits effective at or
    before the row, i.e. the log multiplier that puts the row on the basis of the file's first rows (used to
    compare rows across a split when checking prices; causal). Dividends are left out: they move a price by
    far less than a jump, and their factor needs the very closes being checked."""
    out = np.zeros(len(ts))
    for sym, at, ratio in zip(actions["symbol"], actions["effective_open"], actions["split_ratio"],
                              strict=True):  # a loop over actions (a handful), never over rows
        if np.isfinite(ratio) and ratio > 0 and ratio != 1:
            at_ns = pd.Timestamp(at).tz_convert("UTC").tz_localize(None).to_datetime64()
            out[(symbols == sym) & (ts >= at_ns)] += np.log(ratio)
    return out
