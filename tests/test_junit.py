"""JUnit XML read back with junitparser (a real JUnit reader), the GitHub step summary, the
exit codes a pipeline gates on, and the example CI files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from junitparser import Failure, JUnitXml, Skipped

from auditor.reports.markdown import render_markdown

from .report_fixtures import D, certify

ROOT = Path(__file__).resolve().parents[1]


def read_cases(folder: Path) -> dict:
    xml = JUnitXml.fromfile(str(folder / "report" / "certificate.junit.xml"))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].name == "vae-audit"
    return suites[0], {case.name: case for case in suites[0]}


def test_certified_all_cases_pass(tmp_path):
    code, cert = certify(tmp_path, view=True, formats="json,junit")
    assert code == 0
    suite, cases = read_cases(tmp_path)
    assert list(cases) == ["certificate", "view gap", "constancy"]
    assert all(case.is_passed for case in cases.values())
    assert suite.tests == 3 and suite.failures == 0 and suite.skipped == 0
    props = {p.name: p.value for p in suite.properties()}
    assert props["verdict"] == "certified"
    assert float(props["margin"]) == pytest.approx(cert["margin"], rel=1e-5)


def test_not_certified_fails_with_the_numbers(tmp_path):
    code, cert = certify(tmp_path, aligned=False, formats="json,junit")
    assert code == 1
    suite, cases = read_cases(tmp_path)
    [failure] = cases["certificate"].result
    assert isinstance(failure, Failure)
    assert f"{cert['margin_lcb']:.6g}" in failure.message and "δ 0" in failure.message
    for key in ("margin", "teacher_information", "alignment_loss"):
        assert f"{cert[key]:.6g}" in failure.text
    assert "does not mean" in failure.text
    [skipped] = cases["view gap"].result
    assert isinstance(skipped, Skipped) and "no second view" in skipped.message
    assert cases["constancy"].is_passed
    assert suite.failures == 1 and suite.skipped == 1


def test_constant_encoder_fails_constancy(tmp_path):
    code, cert = certify(tmp_path, formats="json,junit", mu=np.tile(np.linspace(-1, 1, D), (120, 1)))
    assert code == 1 and cert["diagnostics"]["exactly_constant"]
    _, cases = read_cases(tmp_path)
    [failure] = cases["constancy"].result
    assert isinstance(failure, Failure) and "exactly constant" in failure.message


def test_view_gap_failure(tmp_path):
    # A large δ that Ĝ passes but Ĝ − Δ_view does not.
    code, cert = certify(tmp_path, view=True, formats="json,junit")
    bound, margin = cert["view_gap"]["bound"], cert["margin_lcb"]
    delta = round(margin - bound / 2, 4)
    assert delta > cert["margin"] - bound
    code, cert = certify(tmp_path, view=True, formats="json,junit", extra=["--min-margin", str(delta)])
    assert code == 0 and cert["view_gap"]["certified_under_both_views"] is False
    _, cases = read_cases(tmp_path)
    assert cases["certificate"].is_passed
    [failure] = cases["view gap"].result
    assert isinstance(failure, Failure) and "both views" in failure.message


def test_github_step_summary_is_appended(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _, cert = certify(tmp_path, formats="json")
    text = summary.read_text()
    assert "# VAE audit certificate: **certified**" in text
    assert text == "earlier step\n" + render_markdown(cert) + "\n"


def test_no_step_summary_outside_github(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code, _ = certify(tmp_path, formats="json")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["certificate.json"]


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_examples_gate_on_audit_certify(name):
    text = (ROOT / "examples" / name).read_text()
    assert "audit certify" in text and "--format" in text and "junit" in text
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict) and doc
