"""What the language does with a value: as text, as a condition, as a number, in a comparison.

Values are the caller's JSON-like data (dict, list, str, int, float, bool, None) and what the template
computes from them. The rules are PHP's, as Smarty and SMART-TPL templates expect them: a missing value
is empty, ``"0"`` is false, numeric strings compare as numbers, arithmetic turns text into numbers.
Nothing here reads an attribute of a Python object: data is reached only through mapping keys and list
indices (:func:`member`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# PHP's numeric strings: optional sign, digits with an optional fraction, optional exponent, and
# surrounding whitespace. Linear: no nested repetition.
_NUMERIC = re.compile(r"\s*([+-]?(?:\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)\s*")
_LEADING_NUMBER = re.compile(r"\s*([+-]?(?:\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)")
# Integers beyond 64 bits become floats, as in PHP: a loop multiplying a value by itself would
# otherwise build a number of millions of digits.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# int() of a longer digit string is refused by Python (and slow): such text is read as a float.
_MAX_INT_DIGITS = 18


def to_str(value: Any) -> str:
    """The text a value renders as: None and false are empty, true is "1", a float has at most 14
    significant digits (0.1 + 0.2 is "0.3"), a list or mapping renders as nothing."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is bool:
        return "1" if value else ""
    if kind is int:
        try:
            return str(value)  # all digits of a number from the data, however long (an id)
        except ValueError:  # beyond the 4300 digits Python converts
            return format_float(as_float(value))
    if kind is float:
        return format_float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, int):
        return to_str(int(value))
    if isinstance(value, float):
        return format_float(float(value))
    return ""


def format_float(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    text = format(value, ".14g")
    return "0" if text == "-0" else text


def truthy(value: Any) -> bool:
    """PHP's truth: None, false, 0, 0.0, "", "0" and empty lists and mappings are false."""
    if isinstance(value, str):
        return value not in ("", "0")
    if value is None:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (list, tuple, Mapping)):
        return len(value) > 0
    return False


def numeric_string(text: str) -> int | float | None:
    """The number a whole string spells (" 12", "1.5e3"), or None when it is not a number."""
    match = _NUMERIC.fullmatch(text)
    return None if match is None else _number_of(match)


def _number_of(match: re.Match[str]) -> int | float:
    literal = match.group(1)
    if match.group(2) is None and match.group(3) is None and len(literal) <= _MAX_INT_DIGITS:
        return int(literal)
    return float(literal)


def to_number(value: Any) -> int | float:
    """A value in arithmetic: booleans are 0/1, text counts for the number it starts with ("12 apples"
    is 12, "apples" is 0), None, lists and mappings are 0. Integers beyond 64 bits are floats."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return normalize(int(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        match = _LEADING_NUMBER.match(value)
        return 0 if match is None else _number_of(match)
    return 0


def normalize(number: int | float) -> int | float:
    """Integers stay integers while they fit 64 bits, as SMART-TPL's numbers do; beyond, a float."""
    if isinstance(number, int) and not _INT_MIN <= number <= _INT_MAX:
        return as_float(number)
    return number


def as_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:  # beyond 1.8e308
        return math.inf if number > 0 else -math.inf


def to_int(value: Any, default: int) -> int:
    """A whole number for a modifier's argument (a length, a count); ``default`` for inf and NaN."""
    number = to_number(value)
    if isinstance(number, float):
        return int(number) if math.isfinite(number) else default
    return number


def _scalar_pair(left: Any, right: Any) -> tuple[Any, Any] | None:
    """The two sides of a comparison made comparable the PHP 8 way, or None when they are not."""
    if isinstance(left, bool) or isinstance(right, bool):
        return truthy(left), truthy(right)
    if left is None and right is None:
        return 0, 0
    if left is None:
        left = "" if isinstance(right, str) else 0
    if right is None:
        right = "" if isinstance(left, str) else 0
    left_num = isinstance(left, (int, float))
    right_num = isinstance(right, (int, float))
    if left_num and right_num:
        return left, right
    if isinstance(left, str) and isinstance(right, str):
        a, b = numeric_string(left), numeric_string(right)
        return (a, b) if a is not None and b is not None else (left, right)
    if left_num and isinstance(right, str):
        b = numeric_string(right)
        return (left, b) if b is not None else (to_str(left), right)
    if right_num and isinstance(left, str):
        a = numeric_string(left)
        return (a, right) if a is not None else (left, to_str(right))
    return None


def equals(left: Any, right: Any) -> bool:
    pair = _scalar_pair(left, right)
    if pair is None:
        try:
            return bool(left == right)  # lists and mappings: by content
        except RecursionError:  # self-containing data from a Python caller
            return left is right
    return bool(pair[0] == pair[1])


def compare(op: str, left: Any, right: Any) -> bool:
    """``<``, ``<=``, ``>``, ``>=``; a list or mapping is neither smaller nor larger than anything."""
    pair = _scalar_pair(left, right)
    if pair is None:
        return False
    a, b = pair
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def member(container: Any, key: Any) -> Any:
    """``container.key`` / ``container[key]``: a mapping's key, a list's index (a number or a string of
    digits), else None. The only way a template reaches into data."""
    if isinstance(container, Mapping):
        if isinstance(key, str):
            return container.get(key)
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            value = container.get(key)
            return container.get(str(key)) if value is None else value
        if isinstance(key, float) and key.is_integer():
            return member(container, int(key))
        return None
    if isinstance(container, (list, tuple)):
        if isinstance(key, str):
            if not key.isdigit() or len(key) > _MAX_INT_DIGITS:
                return None
            index = int(key)
        elif isinstance(key, int) and not isinstance(key, bool):
            index = key
        elif isinstance(key, float) and key.is_integer():
            index = int(key)
        else:
            return None
        return container[index] if 0 <= index < len(container) else None
    return None
