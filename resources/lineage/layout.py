"""The compact physical layout of the big lineage tables (issue 12): fewer bytes, the same tables and columns.

A table with a layout (:func:`layout_for`) is stored as ``tg_compact.<table>`` (schema ``tg_compact``) and read through the
view ``main.<table>``, which has exactly the columns, types, values and NULLs the plain table had. Readers
(``explain``, ``audit``, ``compare``, notebooks) keep querying ``<table>``; only the writers in
:mod:`resources.lineage.store` know the difference. The levers, all lossless:

* **derived**: a column that is an exact function of other columns *of the same row* (``alpha_bps`` =
  ``alpha × 1e4``; ``cost_bps`` = spread + vol + impact cost, summed in the stage's order). The physical column
  ``<c>__x`` holds NULL where the SQL expression gives the recorded value bit for bit (sign of zero included),
  NaN where the recorded value is NULL but the expression is not, and the recorded value otherwise. So a
  derivation that is not exact (another formula, a config change, a value patched by hand) costs bytes, never
  a wrong number: the check is made by DuckDB on the very expression the view evaluates, at every write.
  Only same-row derivations: a table is rewritten alone (a Dagster rematerialization of one asset), so a
  value derived from another table could silently change with it.
* **float32**: a DOUBLE column whose values are often exactly representable as FLOAT (the GRU's outputs) is
  split into ``<c>__f`` FLOAT (those rows) and ``<c>__d`` DOUBLE (the others); the cast back is exact.
* **order**: rows are stored sorted by ``bar`` and these columns (``_row`` keeps the recorded order; every
  reader orders by it), so a value constant per group (``std_scale`` per bar × horizon × family) becomes one
  run-length-encoded run; or (``across``) by these columns first, so a write of many bars (a replay's flush) is
  stored symbol-major and each symbol's series sits together (``adv_shares`` constant over a session).
* **hidden** columns: per-row values a derivation needs that no column holds (the standardization centre of
  ``predictions.std``), computed by Python at each write (:data:`HIDDEN`), never shown by the view.

The layout a table was created with is stored with it (the table's comment, JSON), so a file keeps being read
and written with its own layout when the code's :func:`layout_for` changes. A table recorded before this layout
existed (a plain ``main.<table>``) stays plain and is written plain; :func:`resources.lineage.store.
LineageStore.migrate` converts such tables explicitly (``tradegraph lineage-migrate``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg

SCHEMA = "tg_compact"   # not "compact": a file named compact.duckdb is a catalog of that name (ambiguous)
LAYOUT_VERSION = 1
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Layout:
    """How one table is stored: ``derived`` column → SQL over ``{other}`` columns of the same row (DOUBLE; a
    derivation reads stored columns, earlier derived ones and hidden ones); ``float32`` DOUBLE columns split by
    exactness; ``order`` the physical sort within a bar (``across``: across the bars of one write); ``hidden`` the names of :data:`HIDDEN` columns: stored
    (``hidden__<name>``, DOUBLE) for derivations to read, computed by Python at each write, never shown."""

    derived: dict[str, str] = field(default_factory=dict)
    float32: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    across: bool = False

    def to_json(self) -> str:
        return json.dumps({"layout": LAYOUT_VERSION, "derived": self.derived, "float32": list(self.float32),
                           "order": list(self.order), "hidden": list(self.hidden), "across": self.across},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Layout:
        d = json.loads(text)
        if d.get("layout") != LAYOUT_VERSION:
            raise ValueError(f"unknown lineage layout version {d.get('layout')!r} (this code reads {LAYOUT_VERSION})")
        return cls(dict(d["derived"]), tuple(d["float32"]), tuple(d["order"]), tuple(d.get("hidden", ())),
                   bool(d.get("across", False)))

    def fitted(self, columns: dict[str, str]) -> Layout:
        """The layout restricted to what ``columns`` (name → DuckDB type of the first write) allow: a derived or
        float32 column and every column a derivation reads must be DOUBLE (or a kept hidden column), order
        columns and a hidden column's inputs must exist."""
        hidden = tuple(h for h in self.hidden if h in HIDDEN and set(HIDDEN[h][0]) <= set(columns))
        readable = {c for c, t in columns.items() if t in _NUMERIC} - set(self.derived)
        readable |= {HIDDEN_PREFIX + h for h in hidden}
        derived = {}
        for col, expr in self.derived.items():   # in declaration order: a derivation reads earlier ones only
            if columns.get(col) == "DOUBLE" and set(_PLACEHOLDER.findall(expr)) <= readable:
                derived[col] = expr
                readable.add(col)
        hidden = tuple(h for h in hidden if any("{" + HIDDEN_PREFIX + h + "}" in e for e in derived.values()))
        doubles = {c for c, t in columns.items() if t == "DOUBLE"}
        return Layout(derived, tuple(c for c in self.float32 if c in doubles and c not in derived),
                      tuple(c for c in self.order if c in columns), hidden, self.across)


HIDDEN_PREFIX = "hidden__"
_NUMERIC = {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT"}   # a derivation may read these


def _group_codes(data: pd.DataFrame, keys: list[str]) -> np.ndarray:
    return data.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()


def std_center(data: pd.DataFrame) -> np.ndarray:
    """The standardization centre of each row's (bar, horizon, family): the value ``c`` for which
    ``clip((raw − c) / std_scale, ±clip)`` gives the recorded ``std`` on most rows (``assets/predictions/
    standardize.py``: the centre is a median of the reference history, not recorded). Candidates: the 8 most
    frequent ``raw − std × std_scale`` of unclipped rows and their neighbours within 2 ulps (99.997 % of the
    rows of a 2-session replay reproduce exactly; the rest are stored). NaN where no row can tell."""
    clip = float(get_cfg("standardization.clip"))
    raw, sd, scale = (data[c].to_numpy(dtype=float) for c in ("raw", "std", "std_scale"))
    out = np.full(len(data), np.nan)
    if not len(data):
        return out
    codes = _group_codes(data, ["bar", "horizon", "family"])
    order = np.argsort(codes, kind="stable")
    for idx in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):   # a loop over groups, not symbols
        r, q, s = raw[idx], sd[idx], scale[idx]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(r) & np.isfinite(q) & (np.abs(q) < clip) & (s > 0)
        if not ok.any():
            continue
        r, q, s = r[ok], q[ok], s[ok]
        values, counts = np.unique(r - q * s, return_counts=True)
        top = values[np.argsort(-counts, kind="stable")[:8]]
        cands = np.unique(np.concatenate([top + k * np.spacing(top) for k in (-2, -1, 0, 1, 2)]))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            hits = (np.clip((r[None, :] - cands[:, None]) / s[None, :], -clip, clip) == q[None, :]).sum(axis=1)
        out[idx] = cands[np.argmax(hits)]
    return out


def vol_unit(data: pd.DataFrame) -> np.ndarray:
    """Each row's (bar, symbol) ``vol_cost_bps`` at the horizon of ``VOL_FORMULA_MINUTES``: there the stage's
    ``k2·σ·√(h/5)`` multiplies by √1 = 1, so this is ``k2·σ`` bit for bit (``assets/arbitrated_scores/logic.py``).
    NaN where the symbol has no such row."""
    from assets.arbitrated_scores.logic import VOL_FORMULA_MINUTES

    if not len(data):
        return np.full(0, np.nan)
    codes = _group_codes(data, ["bar", "symbol"])
    unit = np.full(codes.max() + 1, np.nan)
    at = data["horizon"].to_numpy(dtype=float) == VOL_FORMULA_MINUTES
    unit[codes[at]] = data["vol_cost_bps"].to_numpy(dtype=float)[at]
    return unit[codes]


def std_clip(data: pd.DataFrame) -> np.ndarray:
    """``standardization.clip`` in effect (an audit installs the recorded configuration first)."""
    return np.full(len(data), float(get_cfg("standardization.clip")))


#: hidden column → (the logical columns it is computed from, the function computing it from the logical rows)
HIDDEN: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame], np.ndarray]]] = {
    "std_center": (("bar", "horizon", "family", "raw", "std", "std_scale"), std_center),
    "std_clip": ((), std_clip),
    "vol_unit": (("bar", "symbol", "horizon", "vol_cost_bps"), vol_unit),
}


def with_hidden(layout: Layout, data: pd.DataFrame) -> pd.DataFrame:
    """``data`` (logical rows) with the layout's hidden columns added."""
    return data.assign(**{HIDDEN_PREFIX + h: HIDDEN[h][1](data) for h in layout.hidden})


def _bars_per_session() -> str:
    from resources.market.calendar import get_calendar

    return f"{float(get_calendar().bars_per_full_session())!r}"


def layout_for(table: str) -> Layout | None:
    """The layout a new ``table`` (``audit__`` tables too) is created with, or None (a plain table).

    The formulas are the stages' own, written once more in SQL with the same operations in the same order
    (``assets/blended_alpha/stage.py``, ``assets/arbitrated_scores/logic.py``, ``assets/features/logic.py``);
    the per-row check at each write makes a formula that drifts cost bytes, not correctness."""
    base = table.removeprefix("audit__")
    if base == "predictions":
        # std_scale is one value per bar × horizon × family: stored in that order it is one RLE run per group
        # (71 → 4 B per symbol-bar). Not float32 for ``raw`` (the GRU's half is float32-exact): the two half-NULL
        # columns took 80 B per symbol-bar against 74 for one DOUBLE column (DuckDB picked RLE for both).
        # std = clip((raw − centre) / std_scale, ±clip) for a finite raw, 0 where the scale is not positive
        # (``standardize``); the centre and the clip are hidden columns, one RLE run per group
        return Layout(derived={"std": "CASE WHEN isfinite({raw}) THEN CASE WHEN {std_scale} > 0 THEN greatest(least("
                                      "({raw} - {hidden__std_center}) / {std_scale}, {hidden__std_clip}), "
                                      "-{hidden__std_clip}) ELSE 0.0::DOUBLE END END"},
                      order=("horizon", "family", "symbol"), hidden=("std_center", "std_clip"))
    if base == "blended_alpha":
        return Layout(derived={"alpha_bps": "{alpha} * 10000.0::DOUBLE"})
    if base == "arbitrated_scores_terms":
        from assets.arbitrated_scores.logic import VOL_FORMULA_MINUTES

        return Layout(derived={
            "vol_cost_bps": f"{{hidden__vol_unit}} * sqrt(CAST({{horizon}} AS DOUBLE) / {VOL_FORMULA_MINUTES!r}::DOUBLE)",
            "cost_bps": "({spread_cost_bps} + {vol_cost_bps}) + {impact_cost_bps}",
            "net_bps": "CASE WHEN isfinite({alpha_bps}) THEN abs({alpha_bps}) - {cost_bps} END"},
            hidden=("vol_unit",))
    if base == "features":
        k = _bars_per_session()
        return Layout(derived={"mid": "{price}", "sigma_daily_bps": f"{{sigma_bps}} * sqrt({k}::DOUBLE)",
                               "adv_bar_dollars": f"({{adv_shares}} * {{price}}) / {k}::DOUBLE"},
                      order=("symbol",), across=True)
    if base == "bars":
        return Layout(order=("symbol",), across=True)
    return None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class CompactTable:
    """A compact table as found in a file: its layout and its physical columns (name → type, in order)."""

    layout: Layout
    physical: dict[str, str]

    def logical(self) -> dict[str, str]:
        """Logical column → type, in the view's order."""
        out: dict[str, str] = {}
        for name, typ in self.physical.items():
            if name.endswith("__x") and name[:-3] in self.layout.derived:
                out[name[:-3]] = typ
            elif name.endswith("__f") and name[:-3] in self.layout.float32:
                out[name[:-3]] = "DOUBLE"
            elif name.endswith("__d") and name[:-3] in self.layout.float32:
                continue
            elif name.startswith(HIDDEN_PREFIX) and name[len(HIDDEN_PREFIX):] in self.layout.hidden:
                continue
            else:
                out[name] = typ
        return out

    def decode(self, source: str) -> str:
        """``SELECT`` of the logical columns from the physical table ``source`` (the view's body)."""
        exprs: dict[str, str] = {}

        def expr(col: str) -> str:
            if col in exprs:
                return exprs[col]
            if col in self.layout.derived:
                x = _q(col + "__x")
                body = _PLACEHOLDER.sub(lambda m: f"({expr(m.group(1))})", self.layout.derived[col])
                exprs[col] = f"CASE WHEN {x} IS NULL THEN ({body}) WHEN isnan({x}) THEN NULL ELSE {x} END"
            elif col.startswith(HIDDEN_PREFIX):
                exprs[col] = _q(col)
            elif col in self.layout.float32:
                exprs[col] = f"coalesce(CAST({_q(col + '__f')} AS DOUBLE), {_q(col + '__d')})"
            else:
                exprs[col] = _q(col)
            return exprs[col]

        return "SELECT " + ", ".join(f"{expr(c)} AS {_q(c)}" for c in self.logical()) + f" FROM {source}"

    def encode(self, source: str, present: set[str]) -> str:
        """``SELECT`` of the physical columns from ``source`` (logical columns; those not in ``present`` are NULL),
        sorted as the layout stores rows."""
        # the logical values as the table stores them (cast to its types), so the check below compares what a
        # reader of the view would get
        typed = {**self.logical(), **{HIDDEN_PREFIX + h: "DOUBLE" for h in self.layout.hidden}}
        cast = ", ".join((f"CAST({_q(c)} AS {t})" if c in present else f"CAST(NULL AS {t})") + f" AS {_q(c)}"
                         for c, t in typed.items())
        parts = []
        for name in self.physical:
            col = name[:-3]
            if name.endswith("__x") and col in self.layout.derived:
                d = _PLACEHOLDER.sub(lambda m: f"i.{_q(m.group(1))}", self.layout.derived[col])
                v = f"i.{_q(col)}"
                parts.append(
                    f"CASE WHEN ({d}) IS NOT DISTINCT FROM {v} AND signbit({d}) IS NOT DISTINCT FROM signbit({v}) "
                    f"THEN NULL WHEN {v} IS NULL THEN 'NaN'::DOUBLE "
                    f"WHEN isnan({v}) THEN error('lineage: a NaN in {col} cannot be told from NULL') "
                    f"ELSE {v} END AS {_q(name)}")
            elif name.endswith(("__f", "__d")) and col in self.layout.float32:
                v = f"i.{_q(col)}"
                exact = f"({v} IS NOT NULL AND CAST(TRY_CAST({v} AS FLOAT) AS DOUBLE) IS NOT DISTINCT FROM {v})"
                parts.append(f"CASE WHEN {exact} THEN CAST({v} AS FLOAT) END AS {_q(name)}" if name.endswith("__f")
                             else f"CASE WHEN {exact} THEN NULL ELSE {v} END AS {_q(name)}")
            else:
                parts.append(f"i.{_q(name)}")
        keys = [f"i.{_q(c)}" for c in self.layout.order]
        order = ", ".join([*keys, "i.bar", "i._row"] if self.layout.across else ["i.bar", *keys, "i._row"])
        return f"SELECT {', '.join(parts)} FROM (SELECT {cast} FROM {source}) i ORDER BY {order}"


def physical_columns(layout: Layout, logical: dict[str, str]) -> dict[str, str]:
    """The physical columns (name → type) a fitted layout stores ``logical`` columns in, in order."""
    out: dict[str, str] = {}
    for col, typ in logical.items():
        if col in layout.derived:
            out[col + "__x"] = typ
        elif col in layout.float32:
            out[col + "__f"] = "FLOAT"
            out[col + "__d"] = "DOUBLE"
        else:
            out[col] = typ
    for h in layout.hidden:
        out[HIDDEN_PREFIX + h] = "DOUBLE"
    return out
