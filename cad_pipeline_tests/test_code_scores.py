"""OpenECAD's count-based scores and code extraction, on hand-counted programs."""

from cad_pipeline.evaluate.code_scores import curve_accuracy, extract_code, loop_accuracy

TRUTH = "add_line\nadd_line\nadd_line\nadd_arc\nadd_loop\nadd_circle\nadd_loop\n"  # 3 lines, 1 arc, 1 circle, 2 loops


def test_the_python_block_is_extracted_as_openecad_does():
    assert extract_code("Of course, here are the codes:\n```python\nA = 1\n```") == "\nA = 1\n"
    assert extract_code("no code here") is None
    assert extract_code("```python\nfirst\n``` and ```python\nsecond\n```") == "\nfirst\n"


def test_curve_and_loop_accuracy_follow_check_scores():
    assert curve_accuracy(TRUTH, TRUTH) == 100.0 and loop_accuracy(TRUTH, TRUTH) == 100.0
    one_line_short = TRUTH.replace("add_line\n", "", 1)
    assert curve_accuracy(one_line_short, TRUTH) == 80.0  # (5 - 1) / 5
    assert curve_accuracy(TRUTH + "add_arc\n" * 5, TRUTH) == 80.0  # 5 extra arcs cost at most the 1 expected
    assert loop_accuracy("add_loop\n" * 3, TRUTH) == 50.0  # (2 - 1) / 2
    assert curve_accuracy(None, TRUTH) == 0.0 and loop_accuracy(None, TRUTH) == 0.0
