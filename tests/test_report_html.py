"""The HTML report: self-contained, every panel present, plots decodable, legends beside their axes,
the model's star always in view, and rendered by a real headless browser (Debian's chromium), whose
screenshots are kept in the test's tmp folder (``pytest --basetemp DIR`` to look at them)."""

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
from auditor.reports.html import (
    energy_path_figure,
    latent_variance_figure,
    margin_figure,
    option_groups,
    per_class_figure,
    render_html,
    view_gap_figure,
)

from . import reference as ref
from .report_fixtures import BETA, D, K, audit_arrays, certify, run_cli

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
    assert "Training curve" not in render_html(cert)  # no log, nothing to say: no section


@pytest.mark.parametrize(
    "text",
    [
        b"epoch,margin\n1,inf\n2,-inf\n3,nan\n4,1e308\n",  # values matplotlib cannot place
        b"epoch,margin\n1,a\n2,[red]b[/]\n",  # text only: nothing to plot
        b"epoch,margin\n\xff\xfe,\x00\n",  # not UTF-8, a NUL
        b"epoch,margin,kl\n1,0.5\n2,0.1,0.2,0.3,0.4\n",  # ragged rows
        b"epoch\n" + b"1\n" * 3 + b"epoch,margin\n",  # no value column, a header repeated
        b"",  # empty
    ],
)
def test_a_training_csv_that_breaks_the_plot_costs_only_the_curve(tmp_path, text):
    """Issue 12: a training CSV beside the model that broke the plot ended the report in a traceback."""
    code, cert = certify(tmp_path, formats="json")
    (tmp_path / "lat.csv").write_bytes(text)
    page = html.unescape(render_html(cert))  # never raises
    section = page[page.index("Training curve") :]  # the log is there, so the section says what came of it
    assert "training" in plots(page) or "lat.csv" in section
    out = tmp_path / "again"
    assert (
        run_cli(["report", str(tmp_path / "report" / "certificate.json"), "--format", "html", "--out", str(out)]) == 0
    )
    assert "Training curve" in (out / "certificate.html").read_text()


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


# ------------------------------------------------------------------ a model from elsewhere
def foreign_like(folder: Path, scale: float = 1.0, extra_energy: float = 6.0) -> dict:
    """The certificate of latents such as a foreign VAE gives: no log-variances, no decoder, no training
    log, and means whose energy E‖μ‖² lies far beyond the analytic path (``extra_energy`` in unused rows)."""
    mu, p = audit_arrays(120)
    rng = np.random.default_rng(1)
    mu = np.concatenate([scale * mu, rng.normal(size=(len(mu), 11)) * extra_energy + extra_energy / 2], axis=1)
    np.savez(folder / "lat.npz", mu=mu)
    np.savez(folder / "probs.npz", probs=p)
    args = ["--latents", folder / "lat.npz", "--teacher-probs", folder / "probs.npz", "--beta", BETA]
    code = run_cli(["certify", *map(str, args), "--out", str(folder / "report"), "--format", "json,html", "--quiet"])
    assert code in (0, 1)
    return json.loads((folder / "report" / "certificate.json").read_text())


def drawn(fig) -> np.ndarray:
    """The figure as the page shows it (RGB, 0–1), which also fixes its layout for the extents below."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return mpimg.imread(io.BytesIO(buffer.getvalue()), format="png")[..., :3]


def star_of(fig):
    (ax,) = fig.axes
    (star,) = [line for line in ax.lines if line.get_gid() == "this-model"]
    return ax, star


@pytest.mark.parametrize(
    "scale, extra_energy, off_scale",
    [(1.0, 0.0, False), (1.0, 6.0, True), (-40.0, 0.0, True)],  # on the path; far right; far below (Ĝ ≪ 0)
)
def test_the_star_is_drawn_inside_the_axes_and_clear_of_the_legend(tmp_path, scale, extra_energy, off_scale):
    cert = foreign_like(tmp_path, scale, extra_energy)
    energy, margin = cert["diagnostics"]["mean_sq_norm"], cert["margin"]
    fig = energy_path_figure(cert)
    image = drawn(fig)
    ax, star = star_of(fig)
    ((x, y),) = star.get_xydata()
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    assert x_low < x < x_high and y_low < y < y_high
    assert ((x, y) != (energy, margin)) == off_scale
    assert ("off the path's scale" in star.get_label()) == off_scale
    assert f"{energy:.4g}" in star.get_label() and f"{margin:.4f}" in star.get_label()
    if not off_scale:  # the path is not squashed into a corner: it spans most of the view
        path = ax.lines[0].get_xydata()
        assert np.ptp(path[:, 0]) > 0.5 * (x_high - x_low)
    # On the picture: the star's centre is painted in the star's colour, inside the axes, not under the legend.
    px, py = ax.transData.transform((x, y))
    assert ax.get_window_extent().contains(px, py)
    assert not ax.get_legend().get_window_extent().contains(px, py)
    colour = np.array(matplotlib_colour(star.get_color()))
    row, col = int(round(image.shape[0] - py)), int(round(px))
    assert np.abs(image[row - 1 : row + 2, col - 1 : col + 2] - colour).max() < 0.02


def matplotlib_colour(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def test_every_legend_lies_beside_its_axes(certified):
    _, cert = certified
    for figure in (margin_figure, per_class_figure, energy_path_figure, view_gap_figure, latent_variance_figure):
        fig = figure(cert)
        drawn(fig)
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent()
            assert not legend.overlaps(ax.get_window_extent()), figure.__name__  # covers no bar, curve or star
            assert fig.bbox.contains(legend.x1 - 1, legend.y0 + 1), figure.__name__  # and is not cut off


def test_what_was_not_computed_says_why_and_a_missing_training_log_is_not_mentioned(tmp_path):
    cert = foreign_like(tmp_path)
    page = html.unescape(render_html(cert))
    assert "not computed: precomputed latents have no decoder" in page
    assert "not computed: the encoder gives no log-variances" in page  # mutual information
    assert "not computed: no log-variances" in page  # mean KL to the prior
    assert ">—<" not in page
    assert "Training curve" not in page and "training CSV" not in page


def test_the_command_is_one_box_per_option(certified):
    _, cert = certified
    cert = json.loads(json.dumps(cert))
    cert["command"] = ["audit", "certify", "--beta", "2", "--min-margin", "-0.5", "--quiet", "a<b"]
    page = render_html(cert)
    boxes = re.findall(r'<span class="arg">(.*?)</span>', page)
    assert boxes == ["audit certify", "--beta 2", "--min-margin -0.5", "--quiet a&lt;b"]


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


# Writes into the DOM it dumps: how many <img> the browser decoded (naturalWidth > 0); how many of the
# command's boxes are taller than one line (a box split across lines) and on how many lines they lie;
# where the margin–energy plot is on the page (x, y, width, height in CSS pixels).
PROBE = """<script>window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot'), ok = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) ok++; });
  var el = document.createElement('div'); el.id = 'render-check';
  el.setAttribute('data-plots', imgs.length); el.setAttribute('data-decoded', ok);
  var boxes = document.querySelectorAll('code.command .arg'), tops = {}, least = 1e9, split = 0;
  boxes.forEach(function (b) { var r = b.getBoundingClientRect(); least = Math.min(least, r.height); tops[Math.round(r.top)] = 1; });
  boxes.forEach(function (b) { if (b.getBoundingClientRect().height > 1.5 * least) split++; });
  el.setAttribute('data-boxes', boxes.length); el.setAttribute('data-split', split);
  el.setAttribute('data-lines', Object.keys(tops).length);
  var plot = document.getElementById('plot-energy-path').getBoundingClientRect();
  el.setAttribute('data-energy-path', [plot.left + window.scrollX, plot.top + window.scrollY, plot.width, plot.height].join(','));
  document.body.appendChild(el);
});</script>"""
WINDOW = "--window-size=1100,4200"  # the whole page, the same layout for the DOM dump and the screenshot


def probe(page: str, folder: Path) -> tuple[dict[str, str], str]:
    """The probe's attributes and the dumped DOM of ``page`` as chromium lays it out."""
    # The probe needs scripts, which the report's CSP forbids: it runs on a copy without the CSP.
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace("</body>", PROBE + "</body>")
    (folder / "probe.html").write_text(probed)
    # The virtual-time budget lets the page finish loading (and the probe run) before the dump.
    dom = _browser(
        folder / "profile-dom", WINDOW, "--virtual-time-budget=10000", "--dump-dom", (folder / "probe.html").as_uri()
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = re.search(r'<div id="render-check"([^>]*)>', dom.stdout)
    assert check, dom.stdout[-2000:]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', check.group(1))), dom.stdout


def screenshot(page_file: Path, folder: Path) -> np.ndarray:
    """The page as chromium paints it (RGB, 0–255), also saved as ``folder/<page stem>.png``."""
    shot = folder / f"{page_file.stem}.png"
    result = _browser(folder / "profile-shot", WINDOW, f"--screenshot={shot}", page_file.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    return (mpimg.imread(shot)[..., :3] * 255).round().astype(int)


def painted(image: np.ndarray, hex_colour: str, tolerance: int = 8) -> np.ndarray:
    """Where ``image`` shows ``hex_colour`` (a boolean mask)."""
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return np.all(np.abs(image - rgb) < tolerance, axis=-1)


@pytest.mark.skipif(
    _chromium() is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium; apt-get install -y chromium)",
)
def test_chromium_renders_the_verdict_and_every_plot(certified, tmp_path):
    folder, cert = certified
    page_file = folder / "report" / "certificate.html"
    page = page_file.read_text()
    checks, dom = probe(page, tmp_path)
    assert int(checks["plots"]) == int(checks["decoded"]) == len(plots(page)) == 5
    assert "Certified: the encoder mean is not constant" in dom

    image = screenshot(page_file, tmp_path)
    assert image.shape[:2] == (4200, 1100)
    # The verdict banner (certified green, #1a7f37) is painted near the top of the page.
    assert painted(image[:300], "#1a7f37").sum() > 5000


@pytest.mark.skipif(
    _chromium() is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium; apt-get install -y chromium)",
)
def test_chromium_shows_a_foreign_model_off_the_path_with_the_command_wrapped_between_options(tmp_path):
    from scipy import ndimage

    cert = foreign_like(tmp_path, scale=0.08)  # certified with a small margin, E‖μ‖² far beyond the path
    assert cert["verdict"] == "certified"
    assert cert["diagnostics"]["mean_sq_norm"] > 100 * cert["design"]["path"][-1]["energy"]
    page_file = tmp_path / "report" / "certificate.html"
    checks, dom = probe(page_file.read_text(), tmp_path)
    # Every option is one box on one line, and the command does wrap (over several lines).
    assert int(checks["boxes"]) == len(option_groups(cert["command"])) == 7
    assert int(checks["split"]) == 0 and int(checks["lines"]) >= 2
    assert "not computed: precomputed latents have no decoder" in html.unescape(dom)
    assert "Training curve" not in dom

    image = screenshot(page_file, tmp_path)
    x, y, width, height = (round(float(v)) for v in checks["energy-path"].split(","))
    plot = image[y : y + height, x : x + width]
    # The star is painted twice, in the axes and as the legend's sample: two separate green blobs of the
    # same size. Behind the legend (where the report used to draw it for such a model) it was one whole
    # star and a few pixels of a tip.
    labels, blobs = ndimage.label(painted(plot, "#1a7f37"))
    areas = np.bincount(labels.ravel())[1:]
    assert blobs == 2 and areas.min() > 0.8 * areas.max() > 40, areas


def test_text_from_the_certificate_is_escaped(certified):
    # Paths and the command come from the user: they must not become markup in the page.
    _, cert = certified
    cert = json.loads(json.dumps(cert))
    cert["command"] = ["audit", "certify", "--data", "<script>alert(1)</script>"]
    cert["inputs"][0]["path"] = 'x" onerror="alert(1).npz'
    page = render_html(cert)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'x" onerror' not in page
