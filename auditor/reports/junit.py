"""``certificate.junit.xml``: the verdict as JUnit XML, which every CI system can display.

One test suite, ``vae-audit``, with one test case per check:

- ``certificate`` — fails when not certified (LCB ≤ δ + the rounding bound b, or μ exactly
  constant), with the numbers in the failure;
- ``view gap`` — skipped without a second view; fails unless Ĝ − Δ_view > δ + b;
- ``constancy`` — fails when the encoder mean is exactly constant on the audit set.

The suite's properties carry the headline numbers for dashboards. Strings from outside (the model
path, the tool version, the view-gap reason) pass through :func:`~auditor.reports.escape.xml_text`:
a control character would make the file ill-formed XML, even escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .escape import xml_text
from .interface import ReportFormat

SUITE = "vae-audit"


def _g(value) -> str:
    return "null" if value is None else f"{value:.6g}" if isinstance(value, float) else xml_text(value)


def _case(suite: ET.Element, name: str, classname: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", name=name, classname=classname, time="0")


def _certificate_case(suite: ET.Element, cert: dict, classname: str) -> bool:
    case = _case(suite, "certificate", classname)
    numbers = (
        f"margin Ĝ = {_g(cert['margin'])} nats, lower confidence bound ({cert['confidence']:.0%}) = {_g(cert['margin_lcb'])}, "
        f"required δ = {_g(cert['min_margin'])}; I_T = {_g(cert['teacher_information'])}, L = {_g(cert['alignment_loss'])}, "
        f"N = {cert['num_samples']}, K = {cert['num_classes']}"
    )
    if cert["verdict"] == "certified":
        ET.SubElement(case, "system-out").text = numbers
        return False
    if cert["diagnostics"]["exactly_constant"]:
        why = "the encoder mean is exactly constant on the audit set"
    else:
        bound = cert.get("margin_rounding_bound", 0.0)  # absent from certificates of earlier versions
        why = f"LCB {_g(cert['margin_lcb'])} ≤ δ {_g(cert['min_margin'])} + rounding bound {_g(bound)}"
    failure = ET.SubElement(case, "failure", message=f"not certified: {why}", type="NotCertified")
    failure.text = f"{numbers}\n{cert['meaning']}"
    return True


def _view_gap_case(suite: ET.Element, cert: dict, classname: str) -> tuple[bool, bool]:
    case = _case(suite, "view gap", classname)
    view = cert.get("view_gap")
    if view is None:
        reason = xml_text(cert.get("view_gap_reason") or "no second view")
        ET.SubElement(case, "skipped", message=f"not computed: {reason}")
        return False, True
    numbers = (
        f"Ĝ − Δ_view = {_g(view['margin_minus_bound'])} (Δ_view = {_g(view['bound'])}), required δ = {_g(cert['min_margin'])}; "
        f"G′ = {_g(view['margin_encoder_view'])}, mean KL(p‖p′) = {_g(view['mean_kl'])}, mean TV = {_g(view['mean_tv'])}"
    )
    if view["certified_under_both_views"]:
        ET.SubElement(case, "system-out").text = numbers
        return False, False
    ET.SubElement(
        case, "failure", message="not certified under both views: Ĝ − Δ_view ≤ δ + rounding bound", type="ViewGap"
    ).text = numbers
    return True, False


def _constancy_case(suite: ET.Element, cert: dict, classname: str) -> bool:
    case = _case(suite, "constancy", classname)
    d = cert["diagnostics"]
    numbers = (
        f"max |μ − mean μ| = {_g(d['max_abs_deviation_from_mean'])}, active units {d['active_units']} of {d['latent_dim']}, "
        f"E‖μ‖² = {_g(d['mean_sq_norm'])}"
    )
    if not d["exactly_constant"]:
        ET.SubElement(case, "system-out").text = numbers
        return False
    ET.SubElement(
        case, "failure", message="the encoder mean is exactly constant on the audit set", type="Collapsed"
    ).text = numbers
    return True


def render_junit(cert: dict) -> str:
    model = cert.get("model") or {}
    classname = f"{SUITE}.{xml_text(model.get('path') or model.get('factory') or 'model')}"
    suite = ET.Element("testsuite", name=SUITE)
    properties = ET.SubElement(suite, "properties")
    for key in (
        "verdict",
        "margin",
        "margin_lcb",
        "min_margin",
        "confidence",
        "teacher_information",
        "alignment_loss",
        "num_samples",
        "num_classes",
        "tool_version",
    ):
        ET.SubElement(properties, "property", name=key, value=_g(cert[key]))
    failures = [_certificate_case(suite, cert, classname)]
    view_failed, view_skipped = _view_gap_case(suite, cert, classname)
    failures += [view_failed, _constancy_case(suite, cert, classname)]
    suite.set("tests", "3")
    suite.set("failures", str(sum(failures)))
    suite.set("errors", "0")
    suite.set("skipped", str(int(view_skipped)))
    suite.set("time", "0")
    root = ET.Element("testsuites", name=SUITE, tests="3", failures=str(sum(failures)), errors="0", time="0")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


class JunitReport(ReportFormat):
    name, filename = "junit", "certificate.junit.xml"

    def render(self, cert: dict) -> str:
        return render_junit(cert)
