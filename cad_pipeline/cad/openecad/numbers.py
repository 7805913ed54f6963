"""Numbers printed exactly as OpenECAD's converter prints them through numpy, without calling numpy.

OpenECAD writes coordinates with `np.array2string(np.asarray(v).round(4), separator=', ')` and angles with its
`number_to_pi_string`; models trained on that text expect its exact spelling (`2.`, `[76.2  , 15.875]`,
`np.pi/2`). numpy's array2string costs ~20 µs a call, far too slow for the hot path, so this module reproduces
numpy 2.x's rules (`numpy/_core/arrayprint.py`, FloatingFormat with precision=8, floatmode='maxprec',
suppress=False, sign='-', linewidth=75, legacy off) on Python floats, whose repr is the same shortest
round-trip decimal as numpy's Dragon4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

COORDINATE_DECIMALS = 4
"""OpenECAD rounds every coordinate, length and vector component to 4 decimals before printing."""

PRINT_RESOLUTION = 0.5 * 10.0**-COORDINATE_DECIMALS / 1000.0
"""Metres: half of the 1e-4 mm the code prints, the most rounding moves one printed coordinate."""

ROUNDED_CONTACT = (2.0 + math.sqrt(2.0)) * PRINT_RESOLUTION
"""Metres within which curves read from code only touch: the most rounding moves a printed point (sqrt 2 times the
resolution) plus a refitted arc's circle (twice it), as the round trip bounds them."""

ANGLE_DECIMALS = 6
"""OpenECAD rounds angles that are not a listed multiple of pi to 6 decimals."""

_PRECISION = 8
"""numpy's default print precision: the most fraction digits a printed float gets."""

_LINE_WIDTH = 75
"""numpy's default linewidth; longer arrays wrap onto lines indented by one space."""

_SUMMARY_THRESHOLD = 1000
"""numpy summarises arrays longer than this with '...'; that is not reproduced."""

_PI_TOLERANCE = 1e-10

_PI_FACTORS = (
    (math.pi, "np.pi"),
    (math.pi / 2, "np.pi/2"),
    (math.pi / 3, "np.pi/3"),
    (math.pi / 4, "np.pi/4"),
    (math.pi / 6, "np.pi/6"),
    (2 * math.pi, "2*np.pi"),
    (3 * math.pi / 2, "3*np.pi/2"),
    (3 * math.pi / 4, "3*np.pi/4"),
    (5 * math.pi / 6, "5*np.pi/6"),
    (5 * math.pi / 3, "5*np.pi/3"),
    (7 * math.pi / 6, "7*np.pi/6"),
    (4 * math.pi / 3, "4*np.pi/3"),
)
"""OpenECAD's table, in its order and with its float expressions, so near-ties resolve as they do there."""


def _power_of_ten(n: int) -> float:
    """numpy's `power_of_ten` (multiarray/calculation.c): a table up to 1e8, then repeated *10, which is not
    always `10.0 ** n` for n > 22."""
    if n <= 8:
        return 10.0**n
    result = 1e9
    for _ in range(n - 9):
        result *= 10.0
    return result


def numpy_round(value: float, decimals: int) -> float:
    """`np.round` rather than `round`: numpy scales, rounds half to even and scales back in binary, so ties such
    as 0.00025 (0.0002, not 0.0003) land differently from Python's correctly rounded decimal `round`, and OpenECAD's text follows
    numpy."""
    if decimals >= 0:
        scale = _power_of_ten(decimals)
        scaled = value * scale
    else:
        scale = _power_of_ten(-decimals)
        scaled = value / scale
    try:
        rounded = round(scaled)  # half to even, like rint
    except (OverflowError, ValueError):  # inf and nan: rint leaves them as they are
        rounded = scaled
    else:
        if not rounded:
            return math.copysign(0.0, scaled)  # rint keeps the sign of zero; int 0 has none
    return rounded / scale if decimals >= 0 else rounded * scale


def _float_words(values: Sequence[float]) -> list[str]:
    """Each value as numpy's FloatingFormat prints it inside one array: one shared mode and one shared width."""
    reprs = [repr(v) for v in values]
    for text in reprs:
        if "n" in text:  # 'nan', 'inf': numpy pads these differently; OpenECAD never prints them
            raise ValueError(f"only finite values are printed, got {text}")
    nonzero = [abs(v) for v in values if v]
    if nonzero:
        largest = max(nonzero)
        smallest = min(nonzero)
        if largest >= 1e8 or smallest < 1e-4 or largest / smallest > 1000.0:
            return _exponential_words(values, reprs)
    return _positional_words(values, reprs)


def _positional_words(values: Sequence[float], reprs: list[str]) -> list[str]:
    """Shortest digits, at most 8 after the point, '2.' for integral values, aligned on the point."""
    parts = []
    pad_left = pad_right = 0
    for value, text in zip(values, reprs):
        # No exponent here: positional mode only holds values in [1e-4, 1e8) and zeros, which repr prints plainly.
        integer, _, fraction = text.partition(".")
        if fraction == "0":
            fraction = ""
        elif len(fraction) > _PRECISION:
            integer, _, fraction = f"{value:.{_PRECISION}f}".partition(".")
            fraction = fraction.rstrip("0")
        if len(integer) > pad_left:
            pad_left = len(integer)
        if len(fraction) > pad_right:
            pad_right = len(fraction)
        parts.append((integer, fraction))
    return [integer.rjust(pad_left) + "." + fraction.ljust(pad_right) for integer, fraction in parts]


def _significant_fraction_digits(value: float, text: str) -> int:
    """Digits after the point of the value's shortest mantissa (`1.25e+02` -> 2), capped at 8 as numpy caps
    it, trailing zeros of the capped rounding dropped as numpy's trim='.' drops them."""
    mantissa = text.partition("e")[0].lstrip("-").replace(".", "").strip("0")
    digits = max(len(mantissa) - 1, 0)
    if digits > _PRECISION:
        capped = f"{value:.{_PRECISION}e}".partition("e")[0].partition(".")[2]
        digits = len(capped.rstrip("0"))
    return digits


def _exponential_words(values: Sequence[float], reprs: list[str]) -> list[str]:
    """Every mantissa with the fraction digits the longest one needs (zero-filled), exponents padded to the
    widest one (at least 2 digits), and a space before non-negative mantissas when any has a '-'."""
    precision = max(_significant_fraction_digits(v, t) for v, t in zip(values, reprs))
    mantissas = []
    exponents = []
    for value in values:
        # '#' keeps the point at precision 0, as numpy's '1.e+08'. Once every value is given at least as many
        # digits as its shortest form needs, the correctly rounded digits are the shortest ones zero-filled,
        # which is what Dragon4 prints with min_digits.
        mantissa, _, exponent = f"{value:#.{precision}e}".partition("e")
        mantissas.append(mantissa)
        exponents.append(exponent)
    exponent_digits = max(len(exponent) for exponent in exponents) - 1
    mantissa_width = max(len(mantissa) for mantissa in mantissas)
    return [
        mantissa.rjust(mantissa_width) + "e" + exponent[0] + exponent[1:].rjust(exponent_digits, "0")
        for mantissa, exponent in zip(mantissas, exponents)
    ]


def _bracket(words: list[str]) -> str:
    """numpy's one-dimensional `_formatArray`: ', ' between words, wrapped before a word that would pass
    column 74, continuation lines indented by one space."""
    width = len(words[0])  # FloatingFormat pads every word to the same width
    if 1 + (len(words) - 1) * (width + 2) + width <= _LINE_WIDTH - 1:
        return "[" + ", ".join(words) + "]"
    text = ""
    line = " "
    last = len(words) - 1
    for index, word in enumerate(words):
        if len(line) + len(word) > _LINE_WIDTH - 1 and len(line) > 1:
            text += line.rstrip() + "\n"
            line = " "
        line += word
        if index != last:
            line += ", "
    text += line
    return "[" + text[1:] + "]"


def format_array(values: Sequence[float]) -> str:
    """OpenECAD's `np.array2string(np.asarray(values).round(4), separator=', ')`, the spelling of every point,
    vector and extent in its code."""
    if len(values) == 0:
        return "[]"
    if len(values) > _SUMMARY_THRESHOLD:
        raise ValueError(f"numpy summarises arrays over {_SUMMARY_THRESHOLD} values; got {len(values)}")
    rounded = [numpy_round(float(v), COORDINATE_DECIMALS) for v in values]
    return _bracket(_float_words(rounded))


def format_scalar(value: float) -> str:
    """OpenECAD's `np.array2string(np.float64(value).round(4), separator=', ')` for lengths and extents:
    a 0-d array prints as its one element, without brackets ('2.', '41.275')."""
    return _float_words([numpy_round(float(value), COORDINATE_DECIMALS)])[0]


def format_angle(angle: float) -> str:
    """OpenECAD's `number_to_pi_string`: the common multiples of pi by name, otherwise the numpy scalar
    rounded to 6 decimals, whose str is the same shortest repr as Python's ('0.523599', '1e-05')."""
    magnitude = abs(angle)
    for factor, name in _PI_FACTORS:
        if abs(magnitude - factor) < _PI_TOLERANCE:
            return name if angle > 0 else "-" + name
    return repr(numpy_round(float(angle), ANGLE_DECIMALS))
