"""Scores read from the code text itself: the answer's python block, and OpenECAD's curve and loop count accuracy."""

from __future__ import annotations

import re

PYTHON_BLOCK = re.compile(r"```python(.*?)```", re.DOTALL)
"""OpenECAD's `run_model.py` extracts generated code with this pattern."""
CURVE_CALLS = ("add_line", "add_arc", "add_circle")


def extract_code(answer: str) -> str | None:
    """The first python block of a model's answer, or None when it has none."""
    match = PYTHON_BLOCK.search(answer)
    return match.group(1) if match else None


def curve_accuracy(predicted: str | None, truth: str) -> float:
    """OpenECAD's `check_scores.py` Curve_acc in percent: per curve kind, the reference count less the miscount
    (at most the reference count), summed over kinds, over the reference's curves. No code scores 0."""
    expected = {call: truth.count(call) for call in CURVE_CALLS}
    total = sum(expected.values())
    if predicted is None or total == 0:
        return 0.0
    missed = sum(min(abs(expected[call] - predicted.count(call)), expected[call]) for call in CURVE_CALLS)
    return (total - missed) / total * 100.0


def loop_accuracy(predicted: str | None, truth: str) -> float:
    """OpenECAD's Loop_acc in percent, the same rule for `add_loop` calls."""
    expected = truth.count("add_loop")
    if predicted is None or expected == 0:
        return 0.0
    return (expected - min(abs(expected - predicted.count("add_loop")), expected)) / expected * 100.0
