"""Per-symbol buffers of the last T feature rows, the input of the sequential models.

Rebuilt when a process starts (each Dagster run is a new process) from the features of the bars before
this one — recomputed from the recorded ``bars`` window, which by construction equals what the
``features`` asset stored for those bars (``assets/features/logic.py``) — and updated in place by the replay
loop. A symbol gets a window only when its buffer is full, holds no NaN, and misses at most
``prediction.seq_gap_tolerance_bars`` consecutive bars (those rows are carried forward); otherwise it gets
no sequential prediction that bar, with the reason recorded.
"""

from __future__ import annotations

import numpy as np

REASON_OK = ""
REASON_GAP = "buffer gap longer than tolerance"
REASON_SHORT = "buffer not full (new symbol or not enough history)"
REASON_NAN = "NaN feature in buffer"


class SeqBufferManager:
    """Ring buffers (N, T, F) with a presence mask (N, T); vectorised across symbols."""

    def __init__(self, symbols: np.ndarray, T: int, n_features: int, gap_tolerance: int):
        self.symbols = np.asarray(symbols)
        self.T, self.F, self.gap_tolerance = T, n_features, gap_tolerance
        self.rows = np.full((len(self.symbols), T, n_features), np.nan)
        self.present = np.zeros((len(self.symbols), T), dtype=bool)
        self.filled = np.zeros(len(self.symbols), dtype=int)

    @classmethod
    def rebuild(cls, symbols: np.ndarray, history: np.ndarray, present: np.ndarray,
                gap_tolerance: int) -> SeqBufferManager:
        """From (T, N, F) feature rows of the last T bars, oldest first, and (T, N) bar presence."""
        T, _, F = history.shape
        buf = cls(symbols, T, F, gap_tolerance)
        buf.rows = np.ascontiguousarray(np.transpose(history, (1, 0, 2)))
        buf.present = np.ascontiguousarray(present.T)
        buf.filled[:] = T
        return buf

    def push(self, rows: np.ndarray, present: np.ndarray) -> None:
        """Append one bar's (N, F) rows (same symbol order) in place, dropping the oldest."""
        self.rows[:, :-1] = self.rows[:, 1:]
        self.rows[:, -1] = rows
        self.present[:, :-1] = self.present[:, 1:]
        self.present[:, -1] = present
        self.filled = np.minimum(self.filled + 1, self.T)

    def windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, T, F) windows with short gaps carried forward, an ok mask and a reason per symbol."""
        x = self.rows.copy()
        absent = ~self.present
        run = np.zeros(len(self.symbols), dtype=int)
        longest = np.zeros(len(self.symbols), dtype=int)
        for t in range(self.T):  # a loop over the T window positions, never over symbols
            run = np.where(absent[:, t], run + 1, 0)
            longest = np.maximum(longest, run)
            if t > 0:
                x[:, t] = np.where(absent[:, t, None], x[:, t - 1], x[:, t])
        reason = np.full(len(self.symbols), REASON_OK, dtype=object)
        finite = np.isfinite(x).all(axis=(1, 2))
        reason[~finite] = REASON_NAN
        reason[longest > self.gap_tolerance] = REASON_GAP
        reason[absent[:, 0] | (self.filled < self.T)] = REASON_SHORT
        reason[absent[:, -1]] = "no bar this bar"
        return x, reason == REASON_OK, reason
