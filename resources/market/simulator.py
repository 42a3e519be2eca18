"""The embedded market: a seeded, deterministic multi-asset intraday simulator with planted structure.

Generating model (per session d, bar j = 1…B of a full session, symbol i; all logs, UTC bar closes):

* Static draws (seeded once): price p0_i ~ logU(price_min, price_max), daily volatility σ_i ~
  U(daily_vol_min, daily_vol_max), market beta β_i ~ U(beta_min, beta_max), sector k(i), ADV_i ~
  logU(adv_min, adv_max), base spread b_i ~ U(spread_bps_min, spread_bps_max).
* Intraday U-shapes: volatility u_j = 1 + u_shape_vol·(2x−1)², volume v_j = 1 + u_shape_volume·(2x−1)²,
  x = (j − ½)/B, each normalised to mean square / mean one over a full session. Bars of unequal length (the
  30-minute first hourly bar of the clock grid) scale the variance and the volume by the bar's length over
  the mean bar length ℓ_j (exactly 1 when every bar has the same length).
* Shocks: ε_ij = σ_i/√B · u_j · (√m · β_i/β̄ · f_j + √s · g_k(i),j + √(1−m−s) · e_ij), with f, g, e
  i.i.d. N(0,1), m = market_share, s = sector_share. η_ij is the idiosyncratic part (the last term).
* Planted, learnable structure on the idiosyncratic shocks of the same session:
  - short-term reversal that fades in minutes: μ_ij += Σ_k reversal_coefs[k] · η_i,j−1−k;
  - slower momentum over about an hour: μ_ij += momentum_coef · Σ_{k=1..momentum_window} η_i,j−k.
  One-bar log return r_ij = μ_ij + ε_ij (+ a rare jump: prob jump_prob, size N(0, jump_vol)).
* Sessions chain: open_d = close_{d−1} + N(0, overnight_gap_vol) (the overnight gap). Half days simply end
  early (42 five-minute bars on 2026-11-27).
* Bars: open = previous log price, close = new log price, high/low extend max/min by
  |N(0, range_scale·σ_bar u_j)|; volume = ADV_i/B · v_j · logN(0, volume_noise); spread_bps = b_i ·
  u_j^elasticity · logN(0, spread_noise), bid/ask = close·(1 ∓ spread/2e4).
* Halts: with prob halt_prob a symbol halts for 1…halt_bars_max bars; its rows are absent meanwhile (the
  price keeps moving underneath, so it reopens with a jump) — the engine must cope with missing symbols.

Determinism: every session draws from ``default_rng([seed, session ordinal])``, so any past bar is produced
point-in-time, identically, in any process, without simulating anything after it. The simulator works in
chunks of sessions vectorised over (sessions × symbols); closes per session are kept so any session can be
produced without holding the whole history in memory. It supports 1m/5m/15m/60m bars.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from CONFIG.config_loader import get_cfg, resolve_path
from resources.market.calendar import TradingCalendar, get_calendar

BAR_COLUMNS = ["ts", "symbol", "open", "high", "low", "close", "volume", "bid", "ask"]
_CHUNK = 32


@dataclass(frozen=True)
class SimParams:
    """The simulator's configuration (all from CONFIG ``simulator.*``)."""

    seed: int
    n_symbols: int
    start_date: str
    price_min: float
    price_max: float
    daily_vol_min: float
    daily_vol_max: float
    market_beta_min: float
    market_beta_max: float
    market_share: float
    sector_count: int
    sector_share: float
    u_shape_vol: float
    u_shape_volume: float
    adv_min: float
    adv_max: float
    spread_bps_min: float
    spread_bps_max: float
    spread_vol_elasticity: float
    reversal_coefs: tuple[float, ...]
    momentum_coef: float
    momentum_window: int
    overnight_gap_vol: float
    jump_prob: float
    jump_vol: float
    halt_prob: float
    halt_bars_max: int
    volume_noise: float
    spread_noise: float
    range_scale: float

    @classmethod
    def from_cfg(cls, **overrides: object) -> SimParams:
        fields = {f: get_cfg(f"simulator.{f}") for f in cls.__dataclass_fields__ if f not in overrides}
        fields.update(overrides)
        fields["reversal_coefs"] = tuple(fields["reversal_coefs"])
        return cls(**fields)


class MarketSimulator:
    """Point-in-time bars of the simulated market for any session from ``start_date`` on."""

    def __init__(self, params: SimParams | None = None, calendar: TradingCalendar | None = None):
        self.p = params or SimParams.from_cfg()
        self.cal = calendar or get_calendar()
        self.bars_per_session = self.cal.bars_per_full_session()
        width = max(3, len(str(self.p.n_symbols)))
        self.symbols = np.array([f"S{i:0{width}d}" for i in range(1, self.p.n_symbols + 1)])
        self._static = self._draw_static()
        self._days: list[dt.date] = self.cal.sessions(self.p.start_date, self.cal.end)
        self._day_index = {d: i for i, d in enumerate(self._days)}
        self._open_log: np.ndarray | None = None  # (D, N) log open per session
        self._day_volume: np.ndarray | None = None  # (D, N) session volume
        self._chunks: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._sessions: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_path: Path | None = None

    # ----------------------------------------------------------------- static structure
    def _draw_static(self) -> dict[str, np.ndarray]:
        p, n = self.p, self.p.n_symbols
        rng = np.random.default_rng([p.seed, 0])
        beta = rng.uniform(p.market_beta_min, p.market_beta_max, n)
        x = (np.arange(self.bars_per_session) + 0.5) / self.bars_per_session
        u = 1.0 + p.u_shape_vol * (2 * x - 1) ** 2
        v = 1.0 + p.u_shape_volume * (2 * x - 1) ** 2
        return {
            "p0": np.exp(rng.uniform(np.log(p.price_min), np.log(p.price_max), n)),
            "sigma": rng.uniform(p.daily_vol_min, p.daily_vol_max, n),
            "beta": beta / beta.mean(),
            "sector": rng.integers(0, p.sector_count, n),
            "adv": np.exp(rng.uniform(np.log(p.adv_min), np.log(p.adv_max), n)),
            "spread": rng.uniform(p.spread_bps_min, p.spread_bps_max, n),
            "u": u / np.sqrt(np.mean(u**2)) * np.sqrt(self._bar_lengths()),
            "v": v / v.mean() * self._bar_lengths(),
        }

    def _bar_lengths(self) -> np.ndarray:
        """(B,) each bar's length over the mean bar length, on a full session of the calendar's grid."""
        days = self.cal.sessions(self.p.start_date, self.cal.end)
        full = next((d for d in days if len(self.cal.session_bars(d)) == self.bars_per_session), None)
        if full is None:
            return np.ones(self.bars_per_session)
        closes, opens, _ = self.cal.bar_grid(full, full)
        minutes = (closes - opens).total_seconds().to_numpy() / 60.0
        return minutes / minutes.mean()

    # ----------------------------------------------------------------- session chunks
    def _simulate_chunk(self, chunk: int) -> dict[str, np.ndarray]:
        """Intraday paths (relative to each session's open) for sessions [chunk·C, (chunk+1)·C)."""
        if chunk in self._chunks:
            self._chunks.move_to_end(chunk)
            return self._chunks[chunk]
        out = self._simulate_days(self._days[chunk * _CHUNK:(chunk + 1) * _CHUNK])
        self._chunks[chunk] = out
        while len(self._chunks) > 4:
            self._chunks.popitem(last=False)
        return out

    def _session_paths(self, i: int) -> dict[str, np.ndarray]:
        """Session ``i``'s intraday paths (leading axis of length 1), simulated alone.

        Why alone: serving a bar needs one or two sessions, not the 32 of a chunk (×16 the draws at 5 000
        symbols). Every operation is elementwise or runs along the bar axis, so a session's paths are the
        same bits whether it is simulated alone or in its chunk (``tests/foundation/test_simulator_cache``)."""
        chunk = self._chunks.get(i // _CHUNK)
        if chunk is not None:
            k = i % _CHUNK
            return {key: v[k:k + 1] for key, v in chunk.items()}
        if i in self._sessions:
            self._sessions.move_to_end(i)
            return self._sessions[i]
        out = self._simulate_days([self._days[i]])
        self._sessions[i] = out
        while len(self._sessions) > 8:
            self._sessions.popitem(last=False)
        return out

    def _simulate_days(self, days: list[dt.date]) -> dict[str, np.ndarray]:
        """Intraday paths (relative to each session's open) for the given sessions, stacked on axis 0."""
        p, s, n, b = self.p, self._static, self.p.n_symbols, self.bars_per_session
        d = len(days)
        draws = [self._draw_day(day, b, n) for day in days]
        stack = {k: np.stack([dr[k] for dr in draws]) for k in draws[0]}
        sig_bar = s["sigma"] / np.sqrt(b)
        scale = sig_bar[None, None, :] * s["u"][None, :, None]  # (1, B, N)
        idio = np.sqrt(max(0.0, 1 - p.market_share - p.sector_share))
        eta = scale * idio * stack["e"]
        common = scale * (np.sqrt(p.market_share) * s["beta"][None, None, :] * stack["f"][:, :, None]
                          + np.sqrt(p.sector_share) * np.take_along_axis(
                              stack["g"], np.broadcast_to(s["sector"][None, None, :], (d, b, n)), axis=2))
        mu = np.zeros_like(eta)
        for k, coef in enumerate(p.reversal_coefs):
            mu[:, k + 1:, :] += coef * eta[:, : b - k - 1, :]
        csum = np.cumsum(eta, axis=1)
        lagged = np.concatenate([np.zeros((d, 1, n)), csum[:, :-1, :]], axis=1)
        w = p.momentum_window
        window_sum = lagged - np.concatenate([np.zeros((d, w, n)), lagged[:, :-w, :]], axis=1)[:, :b, :]
        mu += p.momentum_coef * window_sum
        jumps = stack["jump_on"] * stack["jump"] * p.jump_vol
        ret = mu + eta + common + jumps
        valid = np.arange(b)[None, :] < np.array([len(self.cal.session_bars(day)) for day in days])[:, None]
        ret = np.where(valid[:, :, None], ret, 0.0)
        return {
            "ret": ret,
            "valid": valid,
            "hl": np.abs(stack["hl"]) * p.range_scale * scale,
            "volume": s["adv"][None, None, :] / b * s["v"][None, :, None] * np.exp(p.volume_noise * stack["vol"]),
            "spread": s["spread"][None, None, :] * s["u"][None, :, None] ** p.spread_vol_elasticity
            * np.exp(p.spread_noise * stack["spr"]),
            "halted": stack["halted"],
            "gap": stack["gap"] * p.overnight_gap_vol,
        }

    def _draw_day(self, day: dt.date, b: int, n: int) -> dict[str, np.ndarray]:
        p = self.p
        rng = np.random.default_rng([p.seed, day.toordinal()])
        draws = {
            "f": rng.standard_normal(b), "g": rng.standard_normal((b, p.sector_count)),
            "e": rng.standard_normal((b, n)), "hl": rng.standard_normal((b, n)),
            "vol": rng.standard_normal((b, n)), "spr": rng.standard_normal((b, n)),
            "jump_on": rng.random((b, n)) < p.jump_prob, "jump": rng.standard_normal((b, n)),
            "gap": rng.standard_normal(n),
        }
        starts = rng.random((b, n)) < p.halt_prob
        lengths = rng.integers(1, p.halt_bars_max + 1, (b, n))
        halted = np.zeros((b, n), dtype=bool)
        for j, i in zip(*np.nonzero(starts), strict=True):  # rare events only
            halted[j:j + lengths[j, i], i] = True
        draws["halted"] = halted
        return draws

    def _opens_cache(self) -> Path:
        """The file keeping the chain of session opens, keyed by everything that determines it: the
        parameters, the sessions simulated, the grid's bar lengths and numpy's version (its RNG streams)."""
        if self._cache_path is not None:
            return self._cache_path
        key = hashlib.sha256(json.dumps({
            "params": dataclasses.asdict(self.p), "days": [d.isoformat() for d in self._days],
            "bars": self.bars_per_session, "lengths": self._bar_lengths().tolist(),
            "numpy": np.__version__, "chunk": _CHUNK}, sort_keys=True).encode()).hexdigest()[:24]
        self._cache_path = resolve_path("paths.var_dir") / "cache" / f"simulator-opens-{key}.npz"
        return self._cache_path

    def _load_opens(self) -> None:
        """Take the cached chain of session opens when it is longer than the one in memory."""
        path = self._opens_cache()
        try:
            with np.load(path) as z:
                opens, vols, last = z["open_log"], z["day_volume"], z["last_close"]
                lengths = z["session_lengths"]
        except (OSError, KeyError, ValueError):
            return  # no cache (or an unreadable one): simulate
        have = 0 if self._open_log is None else len(self._open_log)
        if len(opens) <= have or not np.array_equal(lengths, self._session_lengths(len(opens))):
            return
        self._open_log, self._day_volume, self._last_close = opens, vols, last

    def _save_opens(self) -> None:
        path = self._opens_cache()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")  # atomic: a reader never sees half a file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, open_log=self._open_log, day_volume=self._day_volume, last_close=self._last_close,
                     session_lengths=self._session_lengths(len(self._open_log)))
        Path(tmp).replace(path)

    def _session_lengths(self, count: int) -> np.ndarray:
        return np.array([len(self.cal.session_bars(d)) for d in self._days[:count]], dtype=np.int64)

    def _ensure_opens(self, upto: int) -> None:
        """Session open log-prices and volumes for sessions 0…upto (chained through the closes).

        The chain is kept in ``<var_dir>/cache`` (:meth:`_opens_cache`): a new process (every sensor run)
        reads it instead of simulating every session since ``start_date`` (12 s at 5 000 symbols)."""
        have = 0 if self._open_log is None else len(self._open_log)
        if have > upto:
            return
        self._load_opens()
        have = 0 if self._open_log is None else len(self._open_log)
        if have > upto:
            return
        n = self.p.n_symbols
        opens = [self._open_log] if self._open_log is not None else []
        vols = [self._day_volume] if self._day_volume is not None else []
        last_close = None if self._open_log is None else self._last_close
        chunk = have // _CHUNK
        while have <= upto:
            c = self._simulate_chunk(chunk)
            totals = c["ret"].sum(axis=1)
            day_vol = np.where(c["valid"][:, :, None] & ~c["halted"], c["volume"], 0.0).sum(axis=1)
            first = have - chunk * _CHUNK
            op = np.empty((len(totals), n))
            for k in range(len(totals)):
                prev = np.log(self._static["p0"]) if last_close is None else last_close + c["gap"][k]
                op[k] = prev
                last_close = prev + totals[k]
            opens.append(op[first:])
            vols.append(day_vol[first:])
            have = (chunk + 1) * _CHUNK
            chunk += 1
            if have >= len(self._days):
                break
        self._open_log = np.concatenate(opens)
        self._day_volume = np.concatenate(vols)
        self._last_close = last_close
        self._save_opens()

    # ----------------------------------------------------------------- public API
    def session_frame(self, session: dt.date) -> pd.DataFrame:
        """All bars of one session, long format (``BAR_COLUMNS``), halted rows absent."""
        if session not in self._day_index:
            raise ValueError(f"{session} is not a simulated session (simulation starts {self.p.start_date})")
        i = self._day_index[session]
        self._ensure_opens(i)
        c = self._session_paths(i)
        k = 0
        closes = self.cal.session_bars(session)
        nb = len(closes)
        logp = self._open_log[i][None, :] + np.cumsum(c["ret"][k, :nb], axis=0)
        prev = np.vstack([self._open_log[i][None, :], logp[:-1]])
        close, open_ = np.exp(logp), np.exp(prev)
        hl = c["hl"][k, :nb]
        high = np.maximum(open_, close) * np.exp(hl)
        low = np.minimum(open_, close) * np.exp(-hl)
        spread = c["spread"][k, :nb]
        keep = ~c["halted"][k, :nb]
        n = self.p.n_symbols
        frame = pd.DataFrame({
            "ts": np.repeat(closes.tz_convert(None).to_numpy(), n),
            "symbol": np.tile(self.symbols, nb),
            "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
            "volume": np.round(c["volume"][k, :nb]).ravel(),
            "bid": (close * (1 - spread / 2e4)).ravel(), "ask": (close * (1 + spread / 2e4)).ravel(),
        })
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame[keep.ravel()].reset_index(drop=True)

    def bars_between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars with start ≤ ts ≤ end (UTC closes), sorted by (ts, symbol)."""
        days = self.cal.sessions(self.cal.session_of(start), self.cal.session_of(end))
        days = [d for d in days if d in self._day_index]
        if not days:
            return pd.DataFrame(columns=BAR_COLUMNS)
        frame = pd.concat([self.session_frame(d) for d in days], ignore_index=True)
        frame = frame[(frame["ts"] >= start) & (frame["ts"] <= end)]
        return frame.sort_values(["ts", "symbol"], kind="mergesort").reset_index(drop=True)

    def adv_shares(self, session: dt.date, sessions: int) -> pd.Series:
        """Average daily volume per symbol over the ``sessions`` sessions strictly before ``session``."""
        i = self._day_index[session]
        self._ensure_opens(max(0, i - 1))
        lo = max(0, i - sessions)
        if i == 0:
            return pd.Series(self._static["adv"], index=self.symbols, name="adv_shares")
        return pd.Series(self._day_volume[lo:i].mean(axis=0), index=self.symbols, name="adv_shares")
