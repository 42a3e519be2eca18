"""What a bar's executions amounted to (``assets.executions.stage.bar_outcome``), worked by hand per branch."""

from __future__ import annotations

import pandas as pd
import pytest

from assets.executions.stage import bar_outcome


def execs(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["verdict", "status"]) if rows else pd.DataFrame(
        {"verdict": pd.Series(dtype=object), "status": pd.Series(dtype=object)})


@pytest.mark.parametrize(("refused", "rows", "state", "expected"), [
    (True, [("ALLOW", "ACCEPTED")], None, ("refused", "the run reached no broker")),
    (False, [], "ACTIVE", ("nothing_to_trade", "no order")),
    (False, [], "HALTED", ("halted", "no order; kill switch HALTED")),
    (False, [("ALLOW", "ACCEPTED"), ("DENY", "NOT_SENT")], "ACTIVE", ("traded", "1 of 2 order(s) sent")),
    (False, [("ALLOW", "NOT_SENT"), ("DENY", "NOT_SENT")], "ACTIVE",
     ("error", "1 allowed order(s) not taken by the broker")),
    (False, [("DENY", "NOT_SENT"), ("DENY", "NOT_SENT")], "HALTED", ("halted", "2 order(s) denied: kill switch HALTED")),
    (False, [("DENY", "NOT_SENT")], "REDUCING", ("halted", "1 order(s) denied: kill switch REDUCING")),
    (False, [("DENY", "NOT_SENT")], "ACTIVE", ("denied", "1 order(s) denied by per-order limits")),
    (False, [("KILL_SWITCH", "CANCELLED")], "HALTED", ("halted", "no order; kill switch HALTED")),  # a cancel only
])
def test_each_outcome(refused, rows, state, expected):
    assert bar_outcome(refused, execs(*rows), state) == expected
