"""The demo's convergence figure: relative FVU improvement over the last fifth of the logged steps."""

from __future__ import annotations

import math

from app.commands.demo import last_fifth_improvement


def test_last_fifth_improvement_reads_the_logged_curve():
    rows = [{"step": step, "fvu": 1.0 / step} for step in range(10, 110, 10)]  # 0.1 at 100, 0.125 at 80
    assert math.isclose(last_fifth_improvement(rows), (0.125 - 0.1) / 0.125)
    flat = [{"step": step, "fvu": 0.2} for step in range(10, 110, 10)]
    assert last_fifth_improvement(flat) == 0.0
    assert math.isnan(last_fifth_improvement(rows[:3]))  # too short a curve to say
    assert math.isclose(last_fifth_improvement(rows + [{"step": 100, "mmcs": 0.5}]), 0.2)  # rows without FVU skipped
