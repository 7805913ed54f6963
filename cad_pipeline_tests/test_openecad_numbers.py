"""The pure-Python number printers against real numpy: OpenECAD's text must match byte for byte."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cad_pipeline.cad.openecad.numbers import format_angle, format_array, format_scalar, numpy_round


def numpy_array_text(values) -> str:
    return np.array2string(np.array(values, dtype=np.float64).round(4), separator=", ")


def numpy_scalar_text(value: float) -> str:
    return np.array2string(np.float64(value).round(4), separator=", ")


def number_to_pi_string(number: float) -> str:
    """OpenECAD's own function, verbatim apart from names, run on a numpy scalar as OpenECAD does."""
    number = np.float64(number)
    pi_factors = {
        np.pi: "np.pi",
        np.pi / 2: "np.pi/2",
        np.pi / 3: "np.pi/3",
        np.pi / 4: "np.pi/4",
        np.pi / 6: "np.pi/6",
        2 * np.pi: "2*np.pi",
        3 * np.pi / 2: "3*np.pi/2",
        3 * np.pi / 4: "3*np.pi/4",
        5 * np.pi / 6: "5*np.pi/6",
        5 * np.pi / 3: "5*np.pi/3",
        7 * np.pi / 6: "7*np.pi/6",
        4 * np.pi / 3: "4*np.pi/3",
    }
    for key, value in pi_factors.items():
        if np.abs(np.abs(number) - key) < 1e-10:
            return value if number > 0 else "-" + value
    return str(number.round(6))


def same_float(a: float, b: float) -> bool:
    """Equal including the sign of zero, which decides between '0.' and '-0.'."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


signs = st.sampled_from([1.0, -1.0])
# Magnitudes 1e-6..1e10, spread evenly over the decades.
spread = st.builds(lambda exponent, sign: sign * 10.0**exponent, st.floats(-6.0, 10.0), signs)
# Exact decimal ties one place past the 4 kept decimals: numpy's rint and Python's round part ways here.
ties = st.builds(lambda k: (k + 0.5) / 1e4, st.integers(-(10**9), 10**9))
small_ties = st.builds(lambda k: (k + 0.5) / 1e4, st.integers(-2000, 2000))
integers = st.integers(-(10**10), 10**10).map(float)
zeros = st.sampled_from([0.0, -0.0])
# Below 5e-5 in magnitude: rounds to a zero that keeps the value's sign.
tiny = st.floats(-4.9e-5, 4.9e-5, allow_subnormal=False)
# From 1e8 up the array goes exponential by itself; from 1e-4 to 1e-3 with anything over 1 it does by ratio.
large = st.builds(lambda m, sign: sign * m, st.floats(1e8, 1e10), signs)
small = st.builds(lambda m, sign: sign * m, st.floats(1e-4, 1e-3), signs)
plain = st.floats(-1e10, 1e10, allow_nan=False, allow_infinity=False)
# Short decimals like CAD dimensions (41.275, 15.875), whose printed widths differ from value to value.
decimals = st.builds(
    lambda n, scale: n / scale, st.integers(-(10**7), 10**7), st.sampled_from([1.0, 8.0, 40.0, 1e3, 1e4])
)
values = st.one_of(spread, ties, small_ties, integers, zeros, tiny, large, small, plain, decimals)


@pytest.mark.parametrize(
    "values, text",
    [
        ([76.2, 0.0], "[76.2,  0. ]"),
        ([76.2, 15.875], "[76.2  , 15.875]"),
        ([0.0, 15.875], "[ 0.   , 15.875]"),
        ([-112.7125, -0.0], "[-112.7125,   -0.    ]"),
        ([13.0969, 7.9375, 41.275], "[13.0969,  7.9375, 41.275 ]"),
        ([1.0, 0.0, -0.0], "[ 1.,  0., -0.]"),
        ([0.0, 0.0, 1.0], "[0., 0., 1.]"),
        ([-112.71249, -0.00001], "[-112.7125,   -0.    ]"),
        ([0.1, 150.0], "[1.0e-01, 1.5e+02]"),
        ([0.0001, 1.0], "[1.e-04, 1.e+00]"),
        ([-0.0, 1e9], "[-0.e+00,  1.e+09]"),
        ([123456.7891, 1.0], "[1.23456789e+05, 1.00000000e+00]"),
        ([0.00004, 1.0], "[0., 1.]"),
        ([99999999.99996, 1.0], "[1.e+08, 1.e+00]"),
        ([0.00025, 0.00035], "[0.0002, 0.0004]"),
        ([1.0, 1000.0], "[   1., 1000.]"),
        ([0.001, 1.0], "[0.001, 1.   ]"),
        ([1.0, 1000.0001], "[1.0000000e+00, 1.0000001e+03]"),
        # 18 words of width 2 end at column 74, the 19th would reach 75 and wraps.
        ([1.0] * 18, "[" + ", ".join(["1."] * 18) + "]"),
        ([1.0] * 19, "[" + ", ".join(["1."] * 18) + ",\n 1.]"),
        ([-1.5] * 30, "[" + ",\n ".join([", ".join(["-1.5"] * 12)] * 2 + [", ".join(["-1.5"] * 6)]) + "]"),
        ([], "[]"),
    ],
)
def test_array_examples(values, text):
    assert numpy_array_text(values) == text
    assert format_array(values) == text


@pytest.mark.parametrize(
    "value, text",
    [(41.275, "41.275"), (0.0, "0."), (-0.0, "-0."), (-0.00001, "-0."), (-9.525, "-9.525"), (381.0, "381."),
     (2.0, "2."), (1e8, "1.e+08"), (-123456789.12345, "-1.23456789e+08"), (1e10, "1.e+10")],
)
def test_scalar_examples(value, text):
    assert numpy_scalar_text(value) == text
    assert format_scalar(value) == text


@pytest.mark.parametrize(
    "angle, text",
    [(math.pi, "np.pi"), (-math.pi / 2, "-np.pi/2"), (math.pi / 6 + 5e-11, "np.pi/6"), (3 * math.pi / 2, "3*np.pi/2"),
     (-4 * math.pi / 3, "-4*np.pi/3"), (2 * math.pi, "2*np.pi"), (0.5235987, "0.523599"), (-1.2, "-1.2"),
     (1e-5, "1e-05"), (0.0, "0.0"), (-0.0000001, "-0.0"), (math.pi / 6 + 2e-10, "0.523599")],
)
def test_angle_examples(angle, text):
    assert number_to_pi_string(angle) == text
    assert format_angle(angle) == text


def test_rounding_ties_follow_numpy_not_python():
    assert round(0.00025, 4) == 0.0003
    assert numpy_round(0.00025, 4) == 0.0002 == float(np.round(np.float64(0.00025), 4))
    assert same_float(numpy_round(-0.00001, 4), -0.0)
    assert same_float(numpy_round(0.00001, 4), 0.0)


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError):
        format_array([1.0, math.nan])
    with pytest.raises(ValueError):
        format_scalar(math.inf)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(values, st.integers(-3, 12))
def test_numpy_round_matches_numpy(value, decimals):
    assert same_float(numpy_round(value, decimals), float(np.round(np.float64(value), decimals)))


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(values)
def test_format_scalar_matches_numpy(value):
    assert format_scalar(value) == numpy_scalar_text(value)


@settings(derandomize=True, max_examples=1200, deadline=None)
@given(st.lists(values, min_size=1, max_size=3))
def test_format_array_matches_numpy(values):
    assert format_array(values) == numpy_array_text(values)


@settings(derandomize=True, max_examples=600, deadline=None)
@given(st.lists(st.one_of(ties, small, zeros, decimals), min_size=2, max_size=3))
def test_format_array_matches_numpy_on_short_decimals(values):
    assert format_array(values) == numpy_array_text(values)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(values, min_size=4, max_size=14))
def test_format_array_matches_numpy_when_lines_wrap(values):
    assert format_array(values) == numpy_array_text(values)


angles = st.one_of(
    values,
    st.floats(-7.0, 7.0),
    st.builds(lambda k: (k + 0.5) / 1e6, st.integers(-(10**7), 10**7)),
    st.builds(
        lambda key, offset, sign: sign * (key + offset),
        st.sampled_from([math.pi * n / d for n, d in [(1, 1), (1, 2), (1, 3), (1, 4), (1, 6), (2, 1), (3, 2), (3, 4),
                                                      (5, 6), (5, 3), (7, 6), (4, 3), (1, 12), (5, 4)]]),
        st.floats(-3e-10, 3e-10),
        signs,
    ),
)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(angles)
def test_format_angle_matches_openecad(angle):
    assert format_angle(angle) == number_to_pi_string(angle)
