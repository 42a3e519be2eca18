"""The scale table's lineage cost split: bytes per bar = fixed + per symbol × symbols, fitted over the sizes."""

import pytest

from dagster_project.commands.bench_scale import fit_costs


def test_fixed_and_per_symbol_costs_worked_by_hand():
    # 200 000 B fixed + 1 200 B per symbol-bar: 260 000, 800 000, 6 200 000 B per bar
    rows = [{"symbols": n, "lineage_bytes_per_bar": 200_000 + 1_200 * n} for n in (50, 500, 5000)]
    got = fit_costs(rows)
    assert got["fixed_bytes_per_bar"] == pytest.approx(200_000, abs=1e-6)
    assert got["bytes_per_symbol_bar"] == pytest.approx(1_200, abs=1e-9)


def test_one_size_gives_no_fixed_cost():
    got = fit_costs([{"symbols": 50, "lineage_bytes_per_bar": 131_072}])
    assert got["bytes_per_symbol_bar"] == 131_072 / 50
    assert got["fixed_bytes_per_bar"] != got["fixed_bytes_per_bar"]  # NaN: one point cannot split the two
