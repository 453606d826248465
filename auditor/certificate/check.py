"""Is a certificate dict one this tool could have written? Schema and arithmetic checks.

Reports are rendered and inputs verified only from a certificate that passes: an unknown schema
version, a missing or mistyped key, or numbers that contradict each other — Ĝ ≠ I_T − L, a
verdict that does not follow from the LCB and δ, view-gap fields that disagree with the margin —
raise :class:`AuditInputError` (exit 2), so an edited file is never shown as if it were fine.
Every identity checked here holds to float64 rounding for a certificate written by
:func:`auditor.certificate.document.certificate_dict`; the tolerance is :data:`TOLERANCE` (relative to the
size of the numbers, absolute below 1). Every key a renderer or ``audit verify`` reads is type-checked
first, so that no certificate, however edited, makes them fail in any other way; the file is read
as bounded JSON (:mod:`auditor.certificate.json_input`): at most :data:`MAX_CERTIFICATE_BYTES`,
nested at most :data:`MAX_CERTIFICATE_DEPTH` deep.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import NoReturn

from ..errors import AuditInputError, shown, shown_text
from . import paths
from .document import CERTIFIED_NOTE, NOT_COLLAPSED_NOTE, SCHEMA
from .json_input import is_json_int, is_json_number, parse_json
from .numbers import confidence_z
from .rounding import margin_rounding_bound
from .verdict import certifies

TOLERANCE = 1e-9
VERDICTS = ("certified", "not_certified")
MAX_CERTIFICATE_BYTES = 16 << 20
MAX_CERTIFICATE_DEPTH = 32
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The JSON types of the fields of "request" (AuditRequest's fields; a test keeps the two in step).
# None: the field may be null. A float may be written as an integer; a bool is never a number.
# STRINGS: a list of strings (the factory's arguments); SIZE: [height, width], two integers.
STRINGS, SIZE = "list of strings", "[height, width]"
REQUEST_TYPES: dict[str, tuple] = {
    **dict.fromkeys(("model", "arch", "key_prefix", "state_key", "latents", "teacher", "teacher_probs"), (str, None)),
    **dict.fromkeys(("data", "split", "column", "teacher_data", "view_probs", "witness"), (str, None)),
    **dict.fromkeys(("limit", "test_every", "num_classes", "witness_offset"), (int, None)),
    "beta": (float, None),
    **dict.fromkeys(("confidence", "min_margin"), (float,)),
    **dict.fromkeys(("trust_code", "trust_teacher_code", "model_diagnostics"), (bool,)),
    "batch_size": (int, str),
    **dict.fromkeys(("device", "precision"), (str,)),
    "arch_args": (STRINGS,),
    "image_size": (SIZE, None),
}
# diagnostics.model: each entry's numbers that reports show when it was computed.
_MODEL_DIAGNOSTICS = {
    "mutual_information": ("value",),
    "self_consistency": ("latent", "data"),
    "ima_contrast": ("mean",),
    "identifiability": ("gap",),
}


def load_certificate(path: str | Path) -> dict:
    """Read ``certificate.json`` and check it; any problem is an AuditInputError naming the file."""
    return check_certificate(read_json(path), where=str(path))


def read_json(path: str | Path):
    """The JSON value of a certificate's file (or of a Statement that carries one), not yet checked."""
    path = Path(path)
    try:
        # Without blocking: a FIFO given as the certificate is refused, not waited on.
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise AuditInputError(f"{path}: not a regular file")
            data = handle.read(MAX_CERTIFICATE_BYTES + 1)  # never more
    except FileNotFoundError:
        raise AuditInputError(f"{path}: no such certificate file") from None
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read the certificate ({exc.strerror or exc})") from None
    return parse_json(data, str(path), MAX_CERTIFICATE_BYTES, MAX_CERTIFICATE_DEPTH)


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, message: str) -> NoReturn:
        raise AuditInputError(f"{self.where}: invalid certificate: {message}")

    def get(self, obj: dict, key: str, kind, label: str = "", nullable: bool = False):
        label = label or key
        if not isinstance(obj, dict) or key not in obj:
            self.fail(f"key '{label}' is missing")
        value = obj[key]
        if value is None and nullable:
            return None
        if kind is float:
            if not _is_number(value):
                self.fail(f"'{label}' must be a finite number, found {shown(value)}")
            return float(value)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(f"'{label}' must be an integer, found {shown(value)}")
        if kind is not int and not isinstance(value, kind):
            self.fail(f"'{label}' must be of type {getattr(kind, '__name__', kind)}, found {shown(value)}")
        return value

    def numbers(self, obj: dict, key: str, label: str, length: int | None = None) -> list | None:
        """An optional list (absent or null allowed) of finite numbers, of ``length`` when given."""
        values = obj.get(key)
        if values is None:
            return None
        if not (isinstance(values, list) and all(_is_number(v) for v in values)):
            self.fail(f"'{label}' must be a list of finite numbers")
        if length is not None and len(values) != length:
            self.fail(f"'{label}' must list {length} numbers, found {len(values)}")
        return values

    def close(self, stored: float, expected: float, what: str) -> None:
        scale = max(1.0, abs(stored), abs(expected))
        if not abs(stored - expected) <= TOLERANCE * scale:
            self.fail(f"{what}: stored {stored!r}, but the other numbers give {expected!r}")


def _is_number(value) -> bool:
    return is_json_number(value) and math.isfinite(value)


def _entropy(masses: list[float]) -> float:
    return -sum(m * math.log(m) for m in masses if m > 0)


def check_certificate(cert, where: str = "certificate") -> dict:
    """Return ``cert`` unchanged when it is a consistent ``vae-audit-certificate/1``; raise otherwise."""
    c = _Checker(where)
    if not isinstance(cert, dict):
        c.fail("the top level must be a JSON object")
    if "schema" not in cert:
        c.fail("no 'schema' key: not a vae-audit certificate")
    if cert["schema"] != SCHEMA:
        c.fail(f"unknown schema version {shown(cert['schema'])} (this tool reads {SCHEMA!r})")
    verdict = c.get(cert, "verdict", str)
    if verdict not in VERDICTS:
        c.fail(f"'verdict' must be one of {', '.join(VERDICTS)}, found {shown(verdict)}")
    _check_margin(c, cert)
    rule = _check_verdict(c, cert)
    # The Markdown report prints this text: it must say what the verdict means, not the opposite.
    if c.get(cert, "meaning", str) != (CERTIFIED_NOTE if verdict == "certified" else NOT_COLLAPSED_NOTE):
        c.fail(f"'meaning' is not the text that goes with the verdict {verdict!r}")
    _check_witness_and_diagnostics(c, cert)
    _check_per_class(c, cert)
    _check_view_gap(c, cert, rule)
    _check_design(c, cert)
    _check_provenance(c, cert)
    return cert


def _check_margin(c: _Checker, cert: dict) -> None:
    margin = c.get(cert, "margin", float)
    info = c.get(cert, "teacher_information", float)
    loss = c.get(cert, "alignment_loss", float)
    h_bar = c.get(cert, "teacher_marginal_entropy", float)
    mean_h = c.get(cert, "teacher_mean_entropy", float)
    c.close(margin, info - loss, "margin ≠ teacher_information − alignment_loss")
    c.close(info, h_bar - mean_h, "teacher_information ≠ teacher_marginal_entropy − teacher_mean_entropy")
    if loss < -TOLERANCE:
        c.fail(f"alignment_loss is a mean KL divergence and cannot be negative, found {loss!r}")
    if c.get(cert, "num_samples", int) < 1:
        c.fail("num_samples must be at least 1")
    if c.get(cert, "num_classes", int) < 2:
        c.fail("num_classes must be at least 2")


def _check_verdict(c: _Checker, cert: dict) -> tuple[float, bool]:
    """Check the verdict against the rule; return the rule's checked inputs (rounding bound, constancy)."""
    confidence = c.get(cert, "confidence", float)
    if not 0.0 <= confidence < 1.0:
        c.fail(f"confidence must be in [0, 1), found {confidence!r}")
    min_margin = c.get(cert, "min_margin", float)
    margin = cert["margin"]
    lcb = c.get(cert, "margin_lcb", float, nullable=True)
    std_error = c.get(cert, "margin_std_error", float, nullable=True)
    z = confidence_z(confidence)
    if z == 0.0:
        expected = margin
    elif std_error is None:
        expected = None
    else:
        expected = margin - z * std_error
    if (lcb is None) != (expected is None):
        c.fail(f"margin_lcb is {lcb!r} but the margin, its standard error and the confidence give {expected!r}")
    if lcb is not None:
        c.close(lcb, expected, "margin_lcb ≠ margin − z(confidence)·margin_std_error")
    bound, constant = _rule_inputs(c, cert)
    if certifies(lcb, min_margin, bound, constant) != (cert["verdict"] == "certified"):
        c.fail(
            f"verdict {cert['verdict']!r} contradicts margin_lcb {lcb!r} against min_margin {min_margin!r}, "
            f"margin_rounding_bound {bound!r} and exactly_constant {constant} (certified iff "
            "margin_lcb > min_margin + margin_rounding_bound and the encoder mean is not exactly constant)"
        )
    return bound, constant


def _rule_inputs(c: _Checker, cert: dict) -> tuple[float, bool]:
    """The verdict rule's rounding bound and exact constancy, checked.

    A certificate without ``margin_rounding_bound`` (written before it was recorded) is judged by
    the strict rule alone. A recorded bound must reach the part of the bound that the
    certificate's own K, N, H(p̄) and mean cross-entropy give (rows summing to 1, logits of 0).
    """
    constant = c.get(c.get(cert, "diagnostics", dict), "exactly_constant", bool, "diagnostics.exactly_constant")
    if "margin_rounding_bound" not in cert:
        return 0.0, constant
    bound = c.get(cert, "margin_rounding_bound", float)
    h_bar = cert["teacher_marginal_entropy"]
    floor = margin_rounding_bound(cert["num_classes"], cert["num_samples"], h_bar, h_bar - cert["margin"], 1.0, 0.0)
    if not bound >= floor * (1 - TOLERANCE):
        c.fail(f"margin_rounding_bound {bound!r} is below {floor!r}, the least its K, N, H(p̄) and mean CE allow")
    return bound, constant


def _check_witness_and_diagnostics(c: _Checker, cert: dict) -> None:
    w = c.get(cert, "witness", dict)
    k = c.get(w, "num_classes", int, "witness.num_classes")
    if k != cert["num_classes"]:
        c.fail(f"witness.num_classes {k} ≠ num_classes {cert['num_classes']}")
    c.get(w, "source", str, "witness.source")
    if c.get(w, "beta", float, "witness.beta") <= 0:
        c.fail("witness.beta must be positive")
    offset = c.get(w, "offset", int, "witness.offset")
    latent_dim = c.get(w, "latent_dim", int, "witness.latent_dim")
    if offset < 0 or offset + k - 1 > latent_dim:
        c.fail(f"the witness rows {offset}..{offset + k - 2} do not fit in latent_dim {latent_dim}")
    d = c.get(cert, "diagnostics", dict)
    if c.get(d, "latent_dim", int, "diagnostics.latent_dim") != latent_dim:
        c.fail("diagnostics.latent_dim ≠ witness.latent_dim")
    if c.get(d, "max_abs_deviation_from_mean", float, "diagnostics.max_abs_deviation_from_mean") < 0:
        c.fail("diagnostics.max_abs_deviation_from_mean cannot be negative")
    c.get(d, "exactly_constant", bool, "diagnostics.exactly_constant")
    active = c.get(d, "active_units", int, "diagnostics.active_units")
    threshold = c.get(d, "active_unit_threshold", float, "diagnostics.active_unit_threshold")
    variance = c.numbers(d, "latent_variance", "diagnostics.latent_variance", latent_dim)
    c.numbers(d, "prior_kl_per_dim", "diagnostics.prior_kl_per_dim", latent_dim)
    if d.get("escape_force") is not None:
        c.get(d, "escape_force", float, "diagnostics.escape_force")
    if variance is not None:
        counted = sum(1 for v in variance if v > threshold)
        if counted != active:
            c.fail(f"diagnostics.active_units is {active} but latent_variance has {counted} above {threshold}")
    if not 0 <= active <= latent_dim:
        c.fail(f"diagnostics.active_units {active} is outside 0..{latent_dim}")
    c.get(d, "mean_sq_norm", float, "diagnostics.mean_sq_norm")
    c.get(d, "mean_prior_kl", float, "diagnostics.mean_prior_kl", nullable=True)
    agreement = c.get(d, "witness_agreement", float, "diagnostics.witness_agreement")
    if not 0.0 <= agreement <= 1.0:
        c.fail("diagnostics.witness_agreement must be in [0, 1]")
    _check_model_diagnostics(c, d)


def _check_model_diagnostics(c: _Checker, d: dict) -> None:
    model = d.get("model")
    if model is None:
        return
    if not isinstance(model, dict):
        c.fail("'diagnostics.model' must be an object")
    for key, fields in _MODEL_DIAGNOSTICS.items():
        if key not in model:
            continue
        label = f"diagnostics.model.{key}"
        if c.get(model, key, dict, label) and c.get(model[key], "computed", bool, f"{label}.computed"):
            for field in fields:
                c.get(model[key], field, float, f"{label}.{field}", nullable=True)


def _check_per_class(c: _Checker, cert: dict) -> None:
    rows = c.get(cert, "per_class", list)
    if len(rows) != cert["num_classes"]:
        c.fail(f"per_class has {len(rows)} rows for num_classes {cert['num_classes']}")
    masses, count = [], 0
    for k, row in enumerate(rows):
        if c.get(row, "class", int, f"per_class[{k}].class") != k:
            c.fail(f"per_class[{k}].class must be {k}")
        count += c.get(row, "count", int, f"per_class[{k}].count")
        masses.append(c.get(row, "teacher_mass", float, f"per_class[{k}].teacher_mass"))
        for key in ("mean_teacher_confidence", "witness_agreement", "mean_alignment_loss", "mean_witness_prob"):
            c.get(row, key, float, f"per_class[{k}].{key}", nullable=True)
    if count != cert["num_samples"]:
        c.fail(f"per_class counts add up to {count}, not num_samples {cert['num_samples']}")
    if min(masses) < 0 or abs(sum(masses) - 1.0) > 1e-6:
        c.fail("per_class teacher_mass is not a probability vector")
    c.close(
        cert["teacher_marginal_entropy"],
        _entropy(masses),
        "teacher_marginal_entropy ≠ entropy of the per_class teacher_mass",
    )


def _check_view_gap(c: _Checker, cert: dict, rule: tuple[float, bool]) -> None:
    if "view_gap" not in cert:
        c.fail("key 'view_gap' is missing")
    view = cert["view_gap"]
    if view is None:
        c.get(cert, "view_gap_reason", str)
        return
    if not isinstance(view, dict):
        c.fail("'view_gap' must be null or an object")
    bound = c.get(view, "bound", float, "view_gap.bound")
    if bound < 0:
        c.fail("view_gap.bound cannot be negative")
    encoder_view = c.get(view, "margin_encoder_view", float, "view_gap.margin_encoder_view")
    c.get(view, "mean_kl", float, "view_gap.mean_kl", nullable=True)
    if not 0.0 <= c.get(view, "mean_tv", float, "view_gap.mean_tv") <= 1.0 + TOLERANCE:
        c.fail("view_gap.mean_tv must be in [0, 1]")
    minus = c.get(view, "margin_minus_bound", float, "view_gap.margin_minus_bound")
    c.close(minus, cert["margin"] - bound, "view_gap.margin_minus_bound ≠ margin − view_gap.bound")
    # The bound is a theorem (docs/mathematics.md): |G′ − G| ≤ Δ_view.
    if abs(encoder_view - cert["margin"]) > bound + TOLERANCE * max(1.0, bound):
        c.fail("|view_gap.margin_encoder_view − margin| exceeds view_gap.bound, which the view-gap bound rules out")
    both = c.get(view, "certified_under_both_views", bool, "view_gap.certified_under_both_views")
    if both != certifies(minus, cert["min_margin"], *rule):
        c.fail(
            f"view_gap.certified_under_both_views is {both} but margin − bound = {minus!r} against min_margin {cert['min_margin']!r}"
        )


def _check_design(c: _Checker, cert: dict) -> None:
    design = cert.get("design")
    if design is None:  # certificates written before the margin–energy path was recorded
        return
    if not isinstance(design, dict):
        c.fail("'design' must be an object")
    e_t = c.get(design, "E_T", float, "design.E_T")
    c.get(design, "analytic_code_energy", float, "design.analytic_code_energy")
    path = c.get(design, "path", list, "design.path")
    w, k = cert["witness"], cert["num_classes"]
    scale = (k - 1) / (k * w["beta"] ** 2)
    for i, point in enumerate(path):
        t = c.get(point, "t", float, f"design.path[{i}].t")
        margin = c.get(point, "margin", float, f"design.path[{i}].margin")
        energy = c.get(point, "energy", float, f"design.path[{i}].energy")
        c.close(energy, t * t * scale * e_t, f"design.path[{i}].energy ≠ t²·(K−1)/(Kβ²)·E_T")
        if t == 0.0:
            c.close(
                margin, cert["teacher_marginal_entropy"] - math.log(k), "design path margin at t = 0 ≠ H(p̄) − log K"
            )
        if t == 1.0:
            c.close(margin, cert["teacher_information"], "design path margin at t = 1 ≠ teacher_information")


def _check_provenance(c: _Checker, cert: dict) -> None:
    for i, record in enumerate(c.get(cert, "inputs", list)):
        c.get(record, "role", str, f"inputs[{i}].role")
        c.get(record, "path", str, f"inputs[{i}].path")
        if not SHA256_HEX.fullmatch(c.get(record, "sha256", str, f"inputs[{i}].sha256")):
            c.fail(f"inputs[{i}].sha256 is not a lowercase hex sha256 digest")
    if paths.KEY in cert:
        c.get(cert, paths.KEY, str)
    c.get(cert, "tool_version", str)
    command = c.get(cert, "command", list)
    if not all(isinstance(part, str) for part in command):
        c.fail("'command' must be a list of strings")
    for key in ("data", "model", "teacher", "settings"):
        if cert.get(key) is not None:
            c.get(cert, key, dict)
    model = cert.get("model") or {}
    for key in ("path", "weights", "factory"):  # reports name the model by one of these
        if key in model:
            c.get(model, key, str, f"model.{key}", nullable=True)
    if model.get("weights_digest") is not None:  # audit verify compares its sha256
        digest = c.get(model, "weights_digest", dict, "model.weights_digest")
        c.get(digest, "sha256", str, "model.weights_digest.sha256", nullable=True)
    if cert.get("request") is not None:
        request = c.get(cert, "request", dict)
        for key, value in request.items():
            problem = request_field_problem(key, value)
            if problem:
                c.fail(problem)


def request_field_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be the recorded request's field ``key`` (:data:`REQUEST_TYPES`), or None.
    Fields this version does not know are left to ``audit verify --recompute``, which refuses them."""
    kinds = REQUEST_TYPES.get(key)
    if kinds is None or any(_is_json_kind(value, kind) for kind in kinds):
        return None
    names = " or ".join("null" if kind is None else getattr(kind, "__name__", kind) for kind in kinds)
    return f"'request.{shown_text(key)}' must be {names}, found {shown(value)}"


def _is_json_kind(value, kind) -> bool:
    if kind is None:
        return value is None
    if kind is float:
        return _is_number(value)
    if kind is int:
        return is_json_int(value)
    if kind is STRINGS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind is SIZE:
        return isinstance(value, list) and len(value) == 2 and all(_is_json_kind(item, int) for item in value)
    return isinstance(value, kind)
