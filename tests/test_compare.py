"""`audit compare BASE NEW`: every exit (0 passes, 1 fails the gate, 2 invalid or not comparable),
the drops computed here by plain subtraction, and output that fits 80 columns or a GitHub table."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from . import reference as ref
from .report_fixtures import BETA, D, K, audit_arrays, run_cli, write_certificate


def certify_mu(folder, mu, p, extra=()) -> tuple[int, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "lat.npz", mu=mu)
    np.savez(folder / "probs.npz", probs=p)
    args = ["--latents", folder / "lat.npz", "--teacher-probs", folder / "probs.npz", "--beta", BETA]
    code = run_cli(["certify", *map(str, args), "--out", str(folder / "r"), "--quiet", *extra])
    return code, json.loads((folder / "r" / "certificate.json").read_text())


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Certificates of one audit set: a strong model, a weaker but certified one, a collapsed one."""
    root = tmp_path_factory.mktemp("releases")
    mu, p = audit_arrays()
    out = {}
    for name, latents in (("strong", mu), ("weaker", 0.35 * mu), ("collapsed", np.zeros_like(mu))):
        code, cert = certify_mu(root / name, latents, p)
        out[name] = root / name / "r" / "certificate.json"
        assert code == (1 if name == "collapsed" else 0), name
    return out


def compare(capsys, *args) -> tuple[int, str, str]:
    code = run_cli(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def number(path, key):
    return json.loads(path.read_text())[key]


def test_same_model_passes(releases, capsys):
    code, out, _ = compare(capsys, releases["strong"], releases["strong"], "--max-margin-drop", 0, "--max-lcb-drop", 0)
    assert code == 0 and "NEW passes the gate" in out and "inputs that changed: none" in out


def test_an_improvement_passes(releases, capsys):
    code, out, _ = compare(capsys, releases["weaker"], releases["strong"], "--max-margin-drop", 0)
    assert code == 0
    gain = number(releases["strong"], "margin") - number(releases["weaker"], "margin")
    assert re.search(rf"^margin Ĝ \(nats\) +\S+ +\S+ +\+{gain:.4f}$", out, re.M)


def test_a_margin_drop_beyond_the_allowed_fails(releases, capsys):
    drop = number(releases["strong"], "margin") - number(releases["weaker"], "margin")
    assert drop > 0
    code, out, _ = compare(capsys, releases["strong"], releases["weaker"], "--max-margin-drop", drop / 2)
    assert code == 1 and f"the margin dropped by {drop:.4g} nats" in out
    assert compare(capsys, releases["strong"], releases["weaker"], "--max-margin-drop", drop * 1.01)[0] == 0
    assert compare(capsys, releases["strong"], releases["weaker"])[0] == 0  # no limit given: only the verdict


def test_an_lcb_drop_beyond_the_allowed_fails(releases, capsys):
    drop = number(releases["strong"], "margin_lcb") - number(releases["weaker"], "margin_lcb")
    code, out, _ = compare(capsys, releases["strong"], releases["weaker"], "--max-lcb-drop", drop / 2)
    assert code == 1 and f"the LCB dropped by {drop:.4g} nats" in out


def test_a_new_model_that_is_not_certified_fails(releases, capsys):
    code, out, _ = compare(capsys, releases["strong"], releases["collapsed"])
    assert code == 1 and "NEW is not certified" in out
    assert re.search(r"^verdict +certified +not certified$", out, re.M)
    assert re.search(
        r"^  latents:\n    was [0-9a-f]{12} \S+strong/lat.npz\n    now [0-9a-f]{12} \S+collapsed/lat.npz$", out, re.M
    )


def test_the_statement_is_accepted_as_either_file(releases, tmp_path, capsys):
    assert run_cli(["report", str(releases["strong"]), "--format", "intoto", "--out", str(tmp_path)]) == 0
    assert compare(capsys, tmp_path / "certificate.intoto.json", releases["weaker"])[0] == 0


# ------------------------------------------------------------------ exit 2
def test_other_teacher_is_not_comparable(releases, tmp_path, capsys):
    mu, p = audit_arrays()
    code, _ = certify_mu(tmp_path / "t", mu, ref.softmax(np.log(p) * 0.9))
    code, _, err = compare(capsys, releases["strong"], tmp_path / "t" / "r" / "certificate.json")
    assert code == 2 and "not comparable: different teacher (sha256 teacher-probs" in err
    assert err.count("\n") == 1


def test_other_rows_and_other_k_are_not_comparable(releases, tmp_path, capsys):
    mu, p = audit_arrays()
    certify_mu(tmp_path / "limit", mu, p, extra=["--limit", "100"])
    code, _, err = compare(capsys, releases["strong"], tmp_path / "limit" / "r" / "certificate.json")
    assert code == 2 and "different audit rows (split 'all', no limit vs split 'all', limit 100)" in err
    rng = np.random.default_rng(3)
    certify_mu(tmp_path / "k", rng.normal(size=(120, D)), ref.softmax(rng.normal(size=(120, K + 1))))
    code, _, err = compare(capsys, releases["strong"], tmp_path / "k" / "r" / "certificate.json")
    assert code == 2 and f"different witness K ({K} vs {K + 1})" in err


def test_other_audit_data_is_not_comparable(releases, tmp_path, capsys):
    cert = json.loads(releases["strong"].read_text())
    cert["inputs"].append({"role": "data", "path": "x.npy", "sha256": "ab" * 32})
    path = write_certificate(tmp_path / "c.json", cert)
    code, _, err = compare(capsys, releases["strong"], path)
    assert code == 2 and "different audit data (sha256 none vs data abababababab)" in err


def test_lcbs_at_other_confidences_are_not_compared(releases, tmp_path, capsys):
    mu, p = audit_arrays()
    certify_mu(tmp_path / "c", mu, p, extra=["--confidence", "0.99"])
    other = tmp_path / "c" / "r" / "certificate.json"
    code, _, err = compare(capsys, releases["strong"], other, "--max-lcb-drop", 0.1)
    assert code == 2 and "different confidences (0.95 vs 0.99)" in err
    assert compare(capsys, releases["strong"], other, "--max-margin-drop", 0.1)[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-margin-drop", "-0.1"], "--max-margin-drop must be"),
        (["--max-lcb-drop", "nan"], "--max-lcb-drop must be"),
        (["--format", "html"], "--format"),
    ],
)
def test_bad_flags(releases, capsys, args, message):
    code, out, err = compare(capsys, releases["strong"], releases["weaker"], *args)
    assert code == 2 and message in err and out == ""


def test_an_invalid_or_missing_file(releases, tmp_path, capsys):
    cert = json.loads(releases["weaker"].read_text())
    cert["margin"] += 0.5
    broken = write_certificate(tmp_path / "broken.json", cert)
    assert compare(capsys, releases["strong"], broken)[0] == 2
    code, out, err = compare(capsys, tmp_path / "none.json", releases["strong"])
    assert code == 2 and "no such certificate file" in err and out == ""


# ------------------------------------------------------------------ the output
def hostile(path) -> dict:
    cert = json.loads(path.read_text())
    cert["inputs"][0]["path"] = "a|b\n# Certified\n[x](http://e) `c` <b>" + "/very-long-folder" * 8 + "/lat.npz"
    return cert


def test_text_fits_80_columns_and_prints_paths_inertly(releases, tmp_path, capsys):
    new = write_certificate(tmp_path / ("n" * 60 + ".json"), hostile(releases["weaker"]))
    code, out, _ = compare(capsys, releases["strong"], new)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert not any(line.startswith("# ") for line in out.splitlines())
    assert "a|b\\x0a# Certified" in out  # the newline in the path is shown, not obeyed


def table_cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2


def test_markdown_is_a_table_that_paths_cannot_break(releases, tmp_path, capsys):
    new = write_certificate(tmp_path / "new.json", hostile(releases["weaker"]))
    code, out, _ = compare(capsys, releases["strong"], new, "--format", "md", "--max-margin-drop", 0)
    assert code == 1
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("#")] == ["### vae-audit compare: NEW fails the gate"]
    tables = [line for line in lines if line.startswith("|")]
    assert len(tables) == 2 + 11 + 2 + 1  # header, rule, eleven quantities; header, rule, one changed input
    assert [table_cells(line) for line in tables[:13]] == [4] * 13
    assert [table_cells(line) for line in tables[13:]] == [3] * 3
    # Shown literally on GitHub: the backslash of "\\x0a" escaped too, so the cell reads a|b\x0a# Certified…
    assert "\\[x\\](http://e) \\`c\\` \\<b\\>" in out and "a\\|b\\\\x0a# Certified" in out
    margin = number(releases["weaker"], "margin")
    assert f"| margin Ĝ (nats) | {number(releases['strong'], 'margin'):.4f} | {margin:.4f} |" in out


def test_comparison_shows_each_certificates_own_numbers_and_changes_neither(releases):
    from auditor.certificate.compare import compare_certificates
    from auditor.reports.comparison import comparison_rows

    base, new = (json.loads(releases[n].read_text()) for n in ("strong", "weaker"))
    before = copy.deepcopy((base, new))
    rows = {label: (b, n) for label, b, n, _ in comparison_rows(compare_certificates(base, new))}
    assert (base, new) == before
    assert rows["active units"] == (
        f"{base['diagnostics']['active_units']} of {D}",
        f"{new['diagnostics']['active_units']} of {D}",
    )
