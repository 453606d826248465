"""The HTML report: self-contained, every panel present, plots decodable, and rendered by a real
headless browser (Debian's chromium) with a screenshot kept under build/test-artifacts/."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from auditor.certificate.design import PROB_FLOOR, design_table, teacher_energy
from auditor.reports.html import render_html

from . import reference as ref
from .report_fixtures import BETA, D, K, audit_arrays, certify, run_cli

ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
IMG = re.compile(r'<img class="plot" id="plot-([a-z-]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def plots(page: str) -> dict[str, np.ndarray]:
    """Every embedded plot, decoded as an image (a broken PNG raises here)."""
    return {name: mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png") for name, data in IMG.findall(page)}


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html-ok")
    code, cert = certify(folder, view=True, formats="json,html")
    assert code == 0
    return folder, cert


def test_certified_page_has_every_panel_and_no_network(certified):
    folder, cert = certified
    page = (folder / "report" / "certificate.html").read_text()
    assert page == render_html(cert)  # same dict in, same page out: re-rendering needs no audit
    assert "Certified: the encoder mean is not constant" in page
    assert "What this does not mean" in page
    decoded = plots(page)
    assert set(decoded) == {"margin", "per-class", "energy-path", "view-gap", "latent-variance"}
    assert page.count("<img") == len(decoded)
    for image in decoded.values():
        assert image.shape[0] > 100 and image.shape[1] > 300 and image.std() > 0  # drawn, not blank
    # Self-contained: no URL anywhere but data: URIs, and a CSP that forbids any request.
    assert not re.search(r"(src|href)\s*=\s*\"(?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page


def test_not_certified_page_says_it_is_not_collapse(tmp_path):
    code, cert = certify(tmp_path, aligned=False, formats="json,html")
    assert code == 1
    page = (tmp_path / "report" / "certificate.html").read_text()
    assert "Not certified" in page
    assert "does not mean" in page and "collapsed" in page
    assert "View gap</h2><p>Not computed" in page
    assert "plot-view-gap" not in page


def test_energy_path_matches_plain_numpy(certified):
    # E_T = mean ‖ℓ(p_i)‖², and on μ_t = t·μ*(p) the witness predicts ∝ p^t (docs/mathematics.md).
    _, cert = certified
    _, p = audit_arrays(120)
    logp = np.log(p)
    ell = logp - logp.mean(axis=1, keepdims=True)
    e_t = (ell**2).sum(axis=1).mean()
    h_bar = ref.entropy_rows(p.mean(axis=0)[None])[0]
    design = cert["design"]
    assert design["E_T"] == pytest.approx(e_t, rel=1e-10)
    assert design["analytic_code_energy"] == pytest.approx((K - 1) / (K * BETA**2) * e_t, rel=1e-10)
    for point in design["path"]:
        q = ref.softmax(point["t"] * logp)
        margin = h_bar - (-(p * np.log(q)).sum(axis=1)).mean()
        assert point["margin"] == pytest.approx(margin, rel=1e-9, abs=1e-12)
        assert point["energy"] == pytest.approx(point["t"] ** 2 * (K - 1) / (K * BETA**2) * e_t, rel=1e-10)


def test_energy_path_equals_audit_design_even_with_zero_probabilities(tmp_path):
    # The streaming path in the certificate and auditor.certificate.design's in-memory design_table agree,
    # including rows with p_ik = 0, which both floor at the same 1e-12.
    mu, p = audit_arrays(60)
    p[0] = [1.0, 0.0, 0.0, 0.0]
    p[1] = [0.5, 0.5, 0.0, 0.0]
    np.savez(tmp_path / "lat.npz", mu=mu)
    np.savez(tmp_path / "probs.npz", probs=p)
    code = run_cli(
        [
            "certify",
            "--latents",
            str(tmp_path / "lat.npz"),
            "--teacher-probs",
            str(tmp_path / "probs.npz"),
            "--beta",
            str(BETA),
            "--out",
            str(tmp_path / "r"),
            "--format",
            "html",
            "--quiet",
        ]
    )
    assert code in (0, 1)
    cert = json.loads((tmp_path / "r" / "certificate.json").read_text())
    assert cert["design"]["prob_floor"] == PROB_FLOOR
    assert cert["design"]["E_T"] == pytest.approx(teacher_energy(p), rel=1e-10)
    table = design_table(p, BETA, D, ts=[pt["t"] for pt in cert["design"]["path"]])
    assert [pt["margin"] for pt in cert["design"]["path"]] == pytest.approx(list(table["margin"]), rel=1e-9, abs=1e-12)
    assert [pt["energy"] for pt in cert["design"]["path"]] == pytest.approx(list(table["energy"]), rel=1e-10)
    assert "plot-energy-path" in (tmp_path / "r" / "certificate.html").read_text()


def test_training_curve_from_the_csv_beside_the_model(tmp_path):
    code, cert = certify(tmp_path, formats="json")
    epochs = np.arange(1, 6)
    (tmp_path / "lat.csv").write_text(
        "epoch,margin,kl,active_units,loss\n" + "".join(f"{e},{0.1 * e},{2.0 / e},{e % 4},{1.0}\n" for e in epochs)
    )
    page = render_html(cert)
    assert "training" in plots(page)
    (tmp_path / "lat.csv").write_text("step;value\n1;2\n")
    page = render_html(cert)
    assert "training" not in plots(page) and "has no 'epoch' column" in html.unescape(page)
    (tmp_path / "lat.csv").unlink()
    assert "No training CSV beside the model" in render_html(cert)


def test_report_command_rerenders_from_json(certified, tmp_path, capsys):
    folder, cert = certified
    assert (
        run_cli(
            ["report", str(folder / "report" / "certificate.json"), "--format", "html,md,junit", "--out", str(tmp_path)]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certificate.html", "certificate.junit.xml", "certificate.md"]
    assert (tmp_path / "certificate.html").read_text() == render_html(cert)
    assert run_cli(["report", str(folder / "report" / "certificate.json"), "--format", "pdf"]) == 2


# ------------------------------------------------------------------ a real browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# Counts the <img> elements that the browser decoded (naturalWidth > 0) into the DOM it dumps.
PROBE = """<script>window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot'), ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) ok++; });
  var el = document.createElement('div'); el.id = 'render-check';
  el.setAttribute('data-plots', imgs.length); el.setAttribute('data-decoded', ok);
  document.body.appendChild(el);
});</script>"""


@pytest.mark.skipif(
    _chromium() is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium; apt-get install -y chromium)",
)
def test_chromium_renders_the_verdict_and_every_plot(certified, tmp_path):
    folder, cert = certified
    page = (folder / "report" / "certificate.html").read_text()
    expected = len(plots(page))
    # The probe needs scripts, which the report's CSP forbids: it runs on a copy without the CSP.
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace("</body>", PROBE + "</body>")
    (tmp_path / "probe.html").write_text(probed)
    # The virtual-time budget lets the page finish loading (and the probe run) before the dump.
    dom = _browser(
        tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", (tmp_path / "probe.html").as_uri()
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = re.search(r'id="render-check" data-plots="(\d+)" data-decoded="(\d+)"', dom.stdout)
    assert check, dom.stdout[-2000:]
    assert int(check.group(1)) == int(check.group(2)) == expected == 5
    assert "Certified: the encoder mean is not constant" in dom.stdout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "certificate-report.png"
    shot.unlink(missing_ok=True)
    result = _browser(
        tmp_path / "profile-shot",
        "--window-size=1100,2600",
        f"--screenshot={shot}",
        (folder / "report" / "certificate.html").as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    image = mpimg.imread(shot)
    assert image.shape[:2] == (2600, 1100)
    # The verdict banner (certified green, #1a7f37) is painted near the top of the page.
    top = (image[:300, :, :3] * 255).round().astype(int)
    assert ((abs(top[..., 0] - 0x1A) < 8) & (abs(top[..., 1] - 0x7F) < 8) & (abs(top[..., 2] - 0x37) < 8)).sum() > 5000


def test_text_from_the_certificate_is_escaped(certified):
    # Paths and the command come from the user: they must not become markup in the page.
    _, cert = certified
    cert = json.loads(json.dumps(cert))
    cert["command"] = ["audit", "certify", "--data", "<script>alert(1)</script>"]
    cert["inputs"][0]["path"] = 'x" onerror="alert(1).npz'
    page = render_html(cert)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'x" onerror' not in page
