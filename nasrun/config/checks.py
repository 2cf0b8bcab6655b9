"""Small value checks shared by every config schema; each raises ConfigError naming key, value and rule.

Kept apart from the schemas so that the axis options (``nasrun.config.options``) and the root config
(``nasrun.config.schema``) can both use them without importing each other.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from nasrun.errors import ConfigError

#: The largest integer a seed may be: numpy's legacy seeding and torch's generators both accept it.
MAX_SEED = 2**32 - 1


def shorten(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters, so a huge value never floods the console."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too large to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = 200) -> str:
    """An argument as typed, cut to about ``limit`` characters (no quotes added, unlike :func:`shorten`)."""
    text = " ".join(str(text).split()) if "\n" in str(text) else str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={shorten(value)} is not allowed: {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_range(key: str, value: Any, lo: int, hi: int) -> None:
    check(is_int(value) and lo <= value <= hi, key, value, f"must be an integer from {lo} to {hi}")


def positive_int(key: str, value: Any, hi: int = 10**6) -> None:
    int_range(key, value, 1, hi)


def finite(key: str, value: Any) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value), key, value, "must be a finite number")


def non_negative(key: str, value: Any) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, key, value,
          "must be a finite number >= 0")


def positive(key: str, value: Any) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key, value,
          "must be a finite number > 0")


def unit_interval(key: str, value: Any, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value and (
        value <= 1 if closed_right else value < 1)
    check(ok, key, value, "must be in [0, 1]" if closed_right else "must be in [0, 1)")


def one_of(key: str, value: Any, allowed: Sequence[str]) -> None:
    check(value in allowed, key, value, "one of " + ", ".join(allowed))


def finite_list(key: str, values: Any) -> None:
    check(all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), key, values,
          "every value must be a finite number")


def sgd(group: str, c: Any) -> None:
    """The SGD settings that search and recipe share: lr, its cosine floor, momentum, decay, clipping."""
    positive(f"{group}.lr", c.lr)
    non_negative(f"{group}.lr_min", c.lr_min)
    check(c.lr_min <= c.lr, f"{group}.lr_min", c.lr_min, f"must be <= {group}.lr ({c.lr})")
    unit_interval(f"{group}.momentum", c.momentum)
    non_negative(f"{group}.weight_decay", c.weight_decay)
    if c.grad_clip is not None:
        positive(f"{group}.grad_clip", c.grad_clip)
