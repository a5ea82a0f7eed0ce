"""The percentile definition the README states, checked against the real ClickHouse
engine (chDB, in memory) and numpy: rank floor(q*(n-1)), as quantileDD does."""

from __future__ import annotations

import chdb
import numpy as np
import pytest

from pipeline.windows.sketch import Sketch


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_window_percentile_is_the_value_at_rank_floor_q_n_minus_1(q):
    values = np.arange(1.0, 51.0)
    sketch = Sketch(0.01)
    sketch.add_many(values)
    exact_at_rank = float(np.quantile(values, q, method="lower"))
    assert sketch.quantile(q) == pytest.approx(exact_at_rank, rel=0.01)
    row = chdb.query(
        f"SELECT quantileDD(0.01, {q})(x), arraySort(groupArray(x))"
        f"[toUInt64(floor({q} * (count() - 1))) + 1], quantileExact({q})(x) "
        "FROM (SELECT toFloat64(number + 1) AS x FROM numbers(50))", "CSV",
    ).bytes().decode().strip().split(",")
    dd, at_rank, exact = map(float, row)
    assert dd == pytest.approx(sketch.quantile(q), rel=0.02)
    assert at_rank == exact_at_rank
    assert exact == float(values[int(q * len(values))])  # rank floor(q*n): one further
