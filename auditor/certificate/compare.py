"""Comparing two certificates: number by number, to a relative tolerance (``audit verify --recompute``),
and a release against the last one (``audit compare``: comparable at all, what changed, does it pass)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AuditInputError

RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_FLOOR = 1e-12  # numbers that are 0 up to float64 rounding compare equal
# Not numbers of the audit: how it was asked for, and where the files were.
_NOT_COMPARED = ("request", "command", "tool_version", "inputs", "paths_relative_to")
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


# ---------------------------------------------------------------------------- two releases
# Inputs that must be the same files for two certificates' numbers to be comparable, by role.
TEACHER_ROLES = ("teacher", "teacher-probs")
DATA_ROLES = ("data", "teacher-data", "view-probs")


@dataclass(frozen=True)
class ChangedInput:
    """The inputs of one role that differ (by sha256) between two certificates, as (path, sha256) pairs."""

    role: str
    base: list[tuple[str, str]]
    new: list[tuple[str, str]]


@dataclass(frozen=True)
class Comparison:
    """A release (NEW) against the last one (BASE): what changed, and why NEW fails the gate, if it does."""

    base: dict
    new: dict
    changed_inputs: list[ChangedInput]
    failures: list[str]  # empty: NEW passes

    @property
    def passes(self) -> bool:
        return not self.failures


def _digests(cert: dict, roles: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted((r["role"], r["sha256"]) for r in cert["inputs"] if r["role"] in roles)


def _short(digests: list[tuple[str, str]]) -> str:
    return ", ".join(f"{role} {sha[:12]}" for role, sha in digests) or "none"


def _rows_audited(cert: dict) -> str:
    """Which rows of the data were audited: the split (default all) and the limit."""
    data, request = cert.get("data") or {}, cert.get("request") or {}
    split, limit = data.get("split") or request.get("split") or "all", data.get("limit", request.get("limit"))
    return f"split {split!r}, " + ("no limit" if limit is None else f"limit {limit!r}")


def comparability_problems(base: dict, new: dict, lcb_compared: bool) -> list[str]:
    """Why the two certificates' numbers cannot be compared: empty when they can."""
    problems = []
    for what, roles in (("teacher", TEACHER_ROLES), ("audit data", DATA_ROLES)):
        before, after = _digests(base, roles), _digests(new, roles)
        if before != after:
            problems.append(f"different {what} (sha256 {_short(before)} vs {_short(after)})")
    if _rows_audited(base) != _rows_audited(new):
        problems.append(f"different audit rows ({_rows_audited(base)} vs {_rows_audited(new)})")
    if base["num_classes"] != new["num_classes"]:
        problems.append(f"different witness K ({base['num_classes']} vs {new['num_classes']})")
    if lcb_compared and base["confidence"] != new["confidence"]:
        problems.append(
            f"lower confidence bounds at different confidences ({base['confidence']:g} vs {new['confidence']:g})"
        )
    return problems


def changed_inputs(base: dict, new: dict) -> list[ChangedInput]:
    """Per role, in the order the roles first appear, the inputs whose sha256 differ."""
    roles = dict.fromkeys(r["role"] for r in [*base["inputs"], *new["inputs"]])
    out = []
    for role in roles:
        before = [(r["path"], r["sha256"]) for r in base["inputs"] if r["role"] == role]
        after = [(r["path"], r["sha256"]) for r in new["inputs"] if r["role"] == role]
        if sorted(sha for _, sha in before) != sorted(sha for _, sha in after):
            out.append(ChangedInput(role, before, after))
    return out


def compare_certificates(
    base: dict, new: dict, max_margin_drop: float | None = None, max_lcb_drop: float | None = None
) -> Comparison:
    """NEW against BASE (two checked certificates). NEW passes when it is certified and its margin and
    LCB fell by no more than the allowed drops (a drop is BASE − NEW; None: not checked; no LCB on
    either side: the LCB's drop is not checked). Raises AuditInputError when the
    two are not comparable: another teacher, other audit data or rows, another witness K, or (with
    ``max_lcb_drop``) LCBs at different confidences."""
    problems = comparability_problems(base, new, lcb_compared=max_lcb_drop is not None)
    if problems:
        raise AuditInputError("the certificates are not comparable: " + "; ".join(problems))
    margin_drop = base["margin"] - new["margin"]
    lcb_drop = (
        None if base["margin_lcb"] is None or new["margin_lcb"] is None else base["margin_lcb"] - new["margin_lcb"]
    )
    failures = []
    if new["verdict"] != "certified":
        failures.append("NEW is not certified")
    if max_margin_drop is not None and margin_drop > max_margin_drop:
        failures.append(
            f"the margin dropped by {margin_drop:.4g} nats, more than --max-margin-drop {max_margin_drop:g}"
        )
    if max_lcb_drop is not None and lcb_drop is not None and lcb_drop > max_lcb_drop:
        failures.append(f"the LCB dropped by {lcb_drop:.4g} nats, more than --max-lcb-drop {max_lcb_drop:g}")
    return Comparison(base, new, changed_inputs(base, new), failures)
