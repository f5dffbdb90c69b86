"""Checks of public arguments: one place, one error (`InvalidArgumentError`)
naming the argument, the owner and what was wrong.

Every check refuses a ``bool`` where a number is expected (``True`` is an
``int`` to Python, never a count or a timeout to a user), NaN and infinity.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from langchain_seedlock._errors import InvalidArgumentError


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(owner, name, value, "must be True or False")
    return value


def check_int(
    owner: str, name: str, value: Any, *, minimum: int, maximum: int | None = None
) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(owner, name, value, "must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidArgumentError(owner, name, value, f"must be {bound}")
    return value


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a float if it is a finite number (not a bool) within the bounds."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidArgumentError(owner, name, value, "must be a number")
    if not math.isfinite(value):
        raise InvalidArgumentError(owner, name, value, "must be a finite number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bound = f"between {minimum:g} and {maximum:g}"
        elif minimum is not None:
            bound = f">= {minimum:g}"
        else:
            bound = f"<= {maximum:g}"
        raise InvalidArgumentError(owner, name, value, f"must be {bound}")
    return float(value)


def check_instance(
    owner: str, name: str, value: Any, kinds: type | tuple[type, ...], what: str
) -> Any:
    """``value`` if it is an instance of ``kinds``; ``what`` says what was expected."""
    if not isinstance(value, kinds):
        raise InvalidArgumentError(
            owner, name, value, f"must be {what}, got {type(value).__name__}"
        )
    return value


def check_names(owner: str, name: str, value: Any) -> tuple[str, ...]:
    """``value`` as a tuple of distinct non-empty strings, in the given order, if it
    is a collection of strings (a tuple, list or set; not one string)."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise InvalidArgumentError(
            owner, name, value, "must be a tuple or list of strings, e.g. ('tenant', 'user_id')"
        )
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise InvalidArgumentError(
                owner, name, value, f"must hold non-empty strings, got {item!r}"
            )
        if item not in names:
            names.append(item)
    return tuple(names)


_STORE_METHODS = ("outputs_for", "fingerprints_for", "write")


def check_store(owner: str, name: str, value: Any, *, urls: bool) -> Any:
    """``value`` if it is None, a store (a `BaselineStore` or an object with its
    methods) or, with ``urls``, a store URL string."""
    if value is None or (urls and isinstance(value, str)):
        return value
    if all(callable(getattr(value, m, None)) for m in _STORE_METHODS):
        return value
    what = "a BaselineStore, a store URL (e.g. 'sqlite:///baselines.db') or None"
    if not urls:
        what = "a BaselineStore (open one with open_store(url)) or None"
    raise InvalidArgumentError(owner, name, value, f"must be {what}, got {type(value).__name__}")
