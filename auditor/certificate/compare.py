"""Comparing two certificates number by number: the verdict and every number, to a relative tolerance."""

from __future__ import annotations

RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_FLOOR = 1e-12  # numbers that are 0 up to float64 rounding compare equal
# Not numbers of the audit: how it was asked for, and where the files were.
_NOT_COMPARED = ("request", "command", "tool_version", "inputs")
# Keys that certificates of earlier versions lack: compared only when the stored one has them.
_ADDED_LATER = ("margin_rounding_bound",)


def number_differences(stored, fresh, where: str = "") -> list[str]:
    """Every number (and the verdict) that differs between two certificate dicts, as 'key: a vs b'."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        out = []
        for key in dict.fromkeys([*stored, *fresh]):
            if where == "" and (key in _NOT_COMPARED or (key in _ADDED_LATER and key not in stored)):
                continue
            out += number_differences(stored.get(key), fresh.get(key), f"{where}.{key}" if where else key)
        return out
    if isinstance(stored, list) and isinstance(fresh, list):
        if len(stored) != len(fresh):
            return [f"{where}: {len(stored)} entries vs {len(fresh)}"]
        return [d for i, (a, b) in enumerate(zip(stored, fresh)) for d in number_differences(a, b, f"{where}[{i}]")]
    if isinstance(stored, bool) or isinstance(fresh, bool) or where == "verdict":
        return [] if stored == fresh else [f"{where}: {stored!r} vs {fresh!r}"]
    if isinstance(stored, (int, float)) and isinstance(fresh, (int, float)):
        close = abs(stored - fresh) <= max(RELATIVE_TOLERANCE * max(abs(stored), abs(fresh)), ABSOLUTE_FLOOR)
        return [] if close else [f"{where}: {stored!r} vs {fresh!r}"]
    if isinstance(stored, (int, float)) or isinstance(fresh, (int, float)) or (stored is None) != (fresh is None):
        return [f"{where}: {stored!r} vs {fresh!r}"]
    return []  # strings other than the verdict: paths and labels, which --root may change
