"""The engine's expected book and its reconciliation against the broker (pure: pandas in, pandas out).

Why: the broker is the source of truth, but the engine must notice when the two disagree (a fill it never
recorded, a crash between submit and recording, a broker-side change) before it sizes orders on a wrong
book. The expected book is derived only from the engine's own recorded fills, deduplicated by
``fill_id`` so a fill reported twice is booked once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg
from resources.brokers.protocol import Fill
from resources.brokers.quantity import round_qty

_STR = pd.Index(["x"]).dtype   # the default string dtype (pandas' ``str``)
FILL_COLUMNS = ["fill_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "ts", "seq", "mid"]
RECON_COLUMNS = ["symbol", "expected", "broker", "difference", "mismatch"]
#: how the engine learnt of a fill (design: the bar timeline): ``settled`` at this bar's settlement of the
#: venue, ``broker`` reported by the broker between bars for an order lineage recorded as sent, ``recovered``
#: for an order lineage only knew as an intent (``sized_orders``: e.g. the run was killed after the submit),
#: ``executed`` reported at once to the submitting run (``executions_fills``).
FILL_SOURCES = ("settled", "broker", "recovered", "executed")


def fills_frame(fills: Iterable[Any]) -> pd.DataFrame:
    """Broker fills (``Fill`` dataclasses or mappings) as a DataFrame with :data:`FILL_COLUMNS`.

    Broker ``Fill`` objects (what every adapter returns, bar after bar in the stepping loop) are read field by
    field into one frame, with the dtypes the generic path gives them (tested); no fill is a cached typed
    empty frame (copied)."""
    fills = list(fills)
    if not fills:
        return _no_fills().copy()
    cols = plain_fill_columns(fills)
    return pd.DataFrame(cols) if cols is not None else _generic_fills_frame(fills)


def plain_fill_columns(fills: list[Any]) -> dict[str, Any] | None:
    """:data:`FILL_COLUMNS` of broker ``Fill`` objects as the arrays ``fills_frame`` builds its frame from
    (the generic path's dtypes: str ids, symbols and sides, float numbers, UTC µs times, int64 seqs), or None
    unless every fill is a ``Fill`` with fields of exactly those types (then the generic path decides)."""
    if not fills or not all(type(f) is Fill for f in fills):
        return None
    cols = {c: [getattr(f, c) for f in fills] for c in FILL_COLUMNS}
    cols["side"] = [str(v) for v in cols["side"]]
    if not (all(type(v) is str for c in ("fill_id", "client_order_id", "symbol") for v in cols[c])
            and all(type(v) is float for c in ("quantity", "price", "fee", "mid") for v in cols[c])
            and all(type(v) is int for v in cols["seq"])
            and all(isinstance(v, dt.datetime) and not isinstance(v, pd.Timestamp) and v.tzinfo is dt.UTC
                    for v in cols["ts"])):
        return None
    return {"fill_id": cols["fill_id"], "client_order_id": cols["client_order_id"], "symbol": cols["symbol"],
            "side": cols["side"], "quantity": np.array(cols["quantity"], dtype=float),
            "price": np.array(cols["price"], dtype=float), "fee": np.array(cols["fee"], dtype=float),
            "ts": pd.DatetimeIndex(cols["ts"]), "seq": np.array(cols["seq"], dtype=np.int64),
            "mid": np.array(cols["mid"], dtype=float)}


def _generic_fills_frame(fills: list[Any]) -> pd.DataFrame:
    rows = [dataclasses.asdict(f) if dataclasses.is_dataclass(f) else dict(f) for f in fills]
    df = pd.DataFrame(rows).reindex(columns=FILL_COLUMNS)
    df["side"] = df["side"].astype(str)
    return df


@functools.cache
def _no_fills() -> pd.DataFrame:
    return _generic_fills_frame([])


def merge_fills(recorded: pd.DataFrame, incoming: pd.DataFrame) -> pd.DataFrame:
    """Recorded fills plus the incoming ones not yet recorded (by ``fill_id``), in booking order."""
    frames = [f for f in (recorded, incoming) if len(f)]
    if not frames:
        return recorded.iloc[0:0].copy()
    merged = pd.concat(frames, ignore_index=True).drop_duplicates("fill_id", keep="first")
    by = ["seq", "fill_id"] if "seq" in merged else ["fill_id"]
    return merged.sort_values(by, kind="stable").reset_index(drop=True)


def signed_quantity(fills: pd.DataFrame) -> np.ndarray:
    """+quantity for buys, −quantity for sells; an unknown side is an error, never a silent zero."""
    side = fills["side"].astype(str).str.upper().to_numpy()
    bad = ~np.isin(side, ["BUY", "SELL"])
    if bad.any():
        raise ValueError(f"fills with an unknown side: {sorted(set(side[bad]))}")
    return np.where(side == "BUY", 1.0, -1.0) * fills["quantity"].to_numpy(dtype=float)


def expected_positions(fills: pd.DataFrame, actions: pd.DataFrame | None = None) -> pd.Series:
    """Symbol → signed quantity implied by the fills (each ``fill_id`` once), rounded to
    ``broker.qty_decimals`` (so 0.1 + 0.2 − 0.3 is flat, not 5.55e-17), flat symbols dropped. ``actions``
    (symbol, effective_open, split_ratio): the splits the broker applied to the book; a fill before one counts
    × its ratio (the broker's book is on the post-split basis)."""
    f = fills.drop_duplicates("fill_id", keep="first")
    q = signed_quantity(f)
    if actions is not None and len(actions) and len(f):
        ts = pd.DatetimeIndex(pd.to_datetime(f["ts"], utc=True))
        for sym, at, ratio in zip(actions["symbol"], actions["effective_open"], actions["split_ratio"],
                                  strict=True):  # a loop over applied actions (a handful), never over fills
            q = np.where((f["symbol"].to_numpy() == sym) & np.asarray(ts < pd.Timestamp(at)), q * float(ratio), q)
    pos = pd.Series(q, index=f["symbol"].to_numpy(), dtype=float).groupby(level=0).sum()
    pos = pd.Series(round_qty(pos.to_numpy()), index=pos.index, dtype=float)
    return pos[pos != 0].sort_index().rename("quantity")


def scaled_by_splits(book: pd.Series, actions: pd.DataFrame | None) -> pd.Series:
    """An expected book after the splits just applied at the venue (``actions``: symbol, split_ratio): each
    position × its ratio, rounded to ``broker.qty_decimals``."""
    if actions is None or not len(actions) or not len(book):
        return book
    ratio = actions.groupby("symbol")["split_ratio"].prod().astype(float)
    scaled = book * ratio.reindex(book.index).fillna(1.0)
    return pd.Series(round_qty(scaled.to_numpy()), index=book.index, dtype=float, name=book.name)


def with_fills(book: pd.Series, fills: pd.DataFrame) -> pd.Series:
    """An expected book (symbol → signed qty) plus fills, rounded to ``broker.qty_decimals``, flat dropped."""
    if not len(fills):
        return book
    fast = _with_unique_fills(book, fills)
    if fast is not None:
        return fast
    add = pd.Series(signed_quantity(fills), index=fills["symbol"].to_numpy(), dtype=float).groupby(level=0).sum()
    total = book.add(add, fill_value=0.0).sort_index()
    total = pd.Series(round_qty(total.to_numpy()), index=total.index, dtype=float, name="quantity")
    return total[total != 0]


def _with_unique_fills(book: pd.Series, fills: pd.DataFrame) -> pd.Series | None:
    """:func:`with_fills` when the fills are of distinct symbols and every number is finite (each bar of the
    stepping loop): the same sums in plain Python (a symbol's one fill added once, as ``groupby.sum`` and
    ``Series.add(fill_value=0.0)`` add it), the same sorted index and rounding; None otherwise."""
    names = fills["symbol"].tolist()
    if not all(type(n) is str for n in names) or len(set(names)) != len(names):
        return None
    held = book.to_numpy(dtype=float)
    keys = book.index.tolist()
    if not np.isfinite(held).all() or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys):
        return None
    q = signed_quantity(fills)
    if not np.isfinite(q).all():
        return None
    add = {name: 0.0 + d for name, d in zip(names, q.tolist(), strict=True)}
    total = {k: b + add.get(k, 0.0) for k, b in zip(keys, held.tolist(), strict=True)}
    total.update({name: 0.0 + a for name, a in add.items() if name not in total})
    symbols = sorted(total)
    values = round_qty(np.array([total[k] for k in symbols], dtype=float))
    keep = values != 0
    index = pd.Index([k for k, ok in zip(symbols, keep.tolist(), strict=True) if ok],
                     dtype=book.index.dtype if len(book) else _STR)   # the index dtype of the union
    return pd.Series(values[keep], index=index, dtype=float, name="quantity")


def classify_fills(incoming: pd.DataFrame, recorded_ids: set[str], orders: pd.DataFrame,
                   bar_ts: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the fills a broker reports into the engine's own fills that lineage lacks and foreign ones.

    ``incoming`` has :data:`FILL_COLUMNS`; ``recorded_ids`` the fill ids lineage already holds (dropped:
    each fill is recorded once ever); ``orders`` what lineage knows of the fills' orders (columns
    client_order_id, sent, decision_price; an id absent from it is not the engine's). Returns (own fills
    with ``source`` and ``decision_price``, foreign fills), both in booking order.
    """
    new = incoming[~incoming["fill_id"].isin(recorded_ids)].drop_duplicates("fill_id")
    info = orders.set_index("client_order_id").reindex(new["client_order_id"])
    own = info["sent"].notna().to_numpy()
    sent = info["sent"].fillna(False).astype(bool).to_numpy()
    at_bar = (pd.to_datetime(new["ts"], utc=True) == pd.Timestamp(bar_ts).tz_convert("UTC")).to_numpy(bool)
    source = np.where(~sent, "recovered", np.where(at_bar, "settled", "broker"))
    mine = new.assign(source=source, decision_price=info["decision_price"].to_numpy(dtype=float))[own]
    return mine.reset_index(drop=True), new[~own].reset_index(drop=True)


def slippage_bps(fills: pd.DataFrame) -> np.ndarray:
    """Per fill: what it paid over the decision price, in bps of the decision price (positive = worse):
    side × (price − decision price) / decision price × 1e4. NaN without a decision price."""
    return _slippage(np.sign(signed_quantity(fills)), fills["price"].to_numpy(dtype=float),
                     fills["decision_price"].to_numpy(dtype=float))


def _slippage(side: np.ndarray, price: np.ndarray, dp: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return side * (price - dp) / dp * 1e4


def take_in_plain(fills: list[Fill], cols: dict[str, Any], recorded_ids: set[str], orders: pd.DataFrame,
                  bar_ts: pd.Timestamp, account: str) -> tuple[pd.DataFrame | None, list[Fill]] | None:
    """:func:`classify_fills` then the ``positions_fills`` table (+ ``slippage_bps``, ``account``) for broker
    ``Fill`` objects (``cols``: :func:`plain_fill_columns`), decided fill by fill on the bar's few fills and
    built in one construction: (own fills' table or None when there is none, foreign fills). None when the
    generic path must decide (an order id twice in ``orders``, a side that is neither BUY nor SELL)."""
    ids = orders["client_order_id"].tolist()
    if len(set(ids)) != len(ids):
        return None
    known = dict(zip(ids, zip(orders["sent"].tolist(), orders["decision_price"].tolist(), strict=True),
                     strict=True))
    at = pd.Timestamp(bar_ts).tz_convert("UTC")
    seen: set[str] = set()
    keep, source, decision, foreign = [], [], [], []
    for i, f in enumerate(fills):   # the bar's fills: a handful
        if f.fill_id in recorded_ids or f.fill_id in seen:
            continue
        seen.add(f.fill_id)
        sent, dp = known.get(f.client_order_id, (None, None))
        if sent is None or sent is pd.NA or (isinstance(sent, float) and sent != sent):
            foreign.append(f)
            continue
        keep.append(i)
        source.append("settled" if bool(sent) and pd.Timestamp(f.ts) == at else
                      "broker" if bool(sent) else "recovered")
        decision.append(np.nan if dp is None or dp is pd.NA else float(dp))
    if not keep:
        return None, foreign
    own = {c: [v[i] for i in keep] if isinstance(v, list) else v[keep] for c, v in cols.items()}
    side = np.array([s.upper() for s in own["side"]], dtype=object)
    if not np.isin(side, ["BUY", "SELL"]).all():
        return None
    dp = np.array(decision, dtype=float)
    signed = np.where(side == "BUY", 1.0, -1.0) * own["quantity"]
    own.update(source=source, decision_price=dp, slippage_bps=_slippage(np.sign(signed), own["price"], dp),
               account=account)
    return pd.DataFrame(own), foreign


@dataclass(frozen=True)
class Reconciliation:
    """``table`` has one row per symbol held on either side (:data:`RECON_COLUMNS`, sorted by symbol)."""

    table: pd.DataFrame
    tolerance: float

    @property
    def n_mismatched(self) -> int:
        return int(self.table["mismatch"].sum())

    @property
    def mismatch(self) -> bool:
        return self.n_mismatched > 0


def reconcile(expected: Mapping[str, float] | pd.Series, broker: Mapping[str, float] | pd.Series,
              tolerance: float | None = None) -> Reconciliation:
    """Per-symbol difference broker − expected, both sides rounded to ``broker.qty_decimals``; a mismatch
    where |difference| > tolerance (default ``kill_switch.reconciliation_tolerance_shares``). A non-finite
    quantity is a mismatch."""
    tol = get_cfg("kill_switch.reconciliation_tolerance_shares") if tolerance is None else tolerance
    exp, brk = pd.Series(expected, dtype=float), pd.Series(broker, dtype=float)
    symbols = exp.index.union(brk.index).sort_values()
    e = round_qty(_on_or_zero(exp, symbols))
    b = round_qty(_on_or_zero(brk, symbols))
    diff = round_qty(b - e)
    mismatch = ~(np.abs(diff) <= tol)
    held = (e != 0) | (b != 0) | mismatch
    # the held rows only, in one construction (was: the whole table, then a boolean selection)
    table = pd.DataFrame({"symbol": symbols.astype(str)[held], "expected": e[held], "broker": b[held],
                          "difference": diff[held], "mismatch": mismatch[held]}, columns=RECON_COLUMNS)
    return Reconciliation(table, float(tol))


def _on_or_zero(s: pd.Series, symbols: pd.Index) -> np.ndarray:
    """``s.reindex(symbols, fill_value=0.0).to_numpy()`` (absent labels 0, NaN values kept)."""
    if not s.index.is_unique:
        return s.reindex(symbols, fill_value=0.0).to_numpy()
    at = s.index.get_indexer(symbols)
    values = s.to_numpy()
    return np.where(at >= 0, values[at] if len(values) else 0.0, 0.0)
