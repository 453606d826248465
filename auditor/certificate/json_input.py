"""JSON from files nobody vouches for: bounded size and nesting, finite numbers, one value per key.

The certificate is read with it, and so (from the layers above) are safetensors headers and the
``vae_audit.*`` metadata of checkpoints.

Plain ``json.loads`` fails on hostile text in ways that are not a ``ValueError`` — a
RecursionError for ``[`` × 100,000 — or with a ``ValueError`` of another kind (an integer of more
than 4300 digits), and it silently keeps the *last* of two equal keys where other tools keep the
first, so ``{"verdict": "not_certified", "verdict": "certified"}`` reads differently in each.
:func:`parse_json` refuses all of these with an :class:`AuditInputError` naming the file:

- more than ``max_bytes`` of text, or text that is not UTF-8;
- nesting deeper than ``max_depth`` arrays and objects (the C scanner itself stops at Python's
  recursion limit, which is caught; shallower documents are measured after parsing, without
  recursion, so no later reader of the value recurses deeper than ``max_depth``);
- ``NaN`` and ``Infinity``, numbers that overflow a float, integers of more than 64 digits;
- a key given twice in one object.
"""

from __future__ import annotations

import json
import math
import sys
from typing import NoReturn, TypeGuard

from ..errors import AuditInputError, shown

MAX_INT_DIGITS = 64


class _Refused(ValueError):
    """Raised inside the parser's hooks; turned into the AuditInputError at the top."""


def parse_json(data: bytes, where: str, max_bytes: int, max_depth: int):
    """The value of the JSON text ``data`` (from ``where``), within the limits of the module docstring."""
    if len(data) > max_bytes:
        raise AuditInputError(f"{where}: {len(data)} bytes of JSON, more than the limit of {max_bytes}")
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=one_value_per_key,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        raise AuditInputError(f"{where}: not valid JSON (the text is not UTF-8)") from None
    except RecursionError:
        raise AuditInputError(f"{where}: not valid JSON (nested more than {max_depth} levels deep)") from None
    except _Refused as exc:
        raise AuditInputError(f"{where}: not valid JSON ({exc})") from None
    except ValueError as exc:  # JSONDecodeError
        raise AuditInputError(f"{where}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if nesting_depth(value) > max_depth:
        raise AuditInputError(f"{where}: not valid JSON (nested more than {max_depth} levels deep)")
    return value


def nesting_depth(value) -> int:
    """Levels of lists and dicts in ``value`` (0 for a scalar), found without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in item if isinstance(child, (list, dict)))
    return deepest


def one_value_per_key(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s ``object_pairs_hook``: a JSON object as a dict, refusing (ValueError) a key
    given twice, whose value different tools would take from different places."""
    value: dict = {}
    for key, item in pairs:
        if key in value:
            raise _Refused(f"the key {shown(key)} is given twice")
        value[key] = item
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text)} digits, more than {MAX_INT_DIGITS}")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:30]} overflows a float")
    return value


def _no_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not a number JSON allows (non-finite numbers are written as null)")


def is_json_int(value) -> TypeGuard[int]:
    """A JSON integer as parsed: an int, and not a bool (True is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value) -> TypeGuard[int | float]:
    """A JSON number as parsed: an int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive_finite(value) -> bool:
    """A Python number (not a bool) in (0, the largest float]. A comparison, not math.isfinite,
    which raises OverflowError for an integer beyond a float's range."""
    return is_json_number(value) and 0 < value <= sys.float_info.max
