"""`audit verify` exit codes (0 match, 1 differs/missing, 2 invalid), --recompute, and the
certificate consistency check that guards verify and report alike."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from auditor.certificate.check import check_certificate, load_certificate
from auditor.errors import AuditInputError

from .report_fixtures import certify, run_cli, write_certificate


@pytest.fixture()
def fresh(tmp_path):
    code, cert = certify(tmp_path)
    return tmp_path, tmp_path / "report" / "certificate.json", cert


def test_unedited_inputs_match(fresh, capsys):
    _, cert_path, cert = fresh
    assert run_cli(["verify", str(cert_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == len(cert["inputs"]) == 2
    assert "all 2 inputs match" in out


def test_edited_input_differs(fresh, capsys):
    folder, cert_path, _ = fresh
    with open(folder / "probs.npz", "ab") as handle:
        handle.write(b"\0")
    assert run_cli(["verify", str(cert_path)]) == 1
    out = capsys.readouterr().out
    assert "differs" in out and "probs.npz" in out


def test_missing_input(fresh, capsys):
    folder, cert_path, _ = fresh
    (folder / "lat.npz").unlink()
    assert run_cli(["verify", str(cert_path)]) == 1
    assert "missing" in capsys.readouterr().out


def test_recompute_matches(fresh, capsys):
    _, cert_path, _ = fresh
    assert run_cli(["verify", str(cert_path), "--recompute"]) == 0
    assert "every number match" in capsys.readouterr().out


def test_recompute_finds_an_edited_number_the_check_cannot(fresh, capsys):
    # E‖μ‖² is not tied to any other number in the certificate: only re-running the audit catches it.
    _, cert_path, cert = fresh
    cert["diagnostics"]["mean_sq_norm"] *= 1.001
    write_certificate(cert_path, cert)
    assert run_cli(["verify", str(cert_path)]) == 0
    assert run_cli(["verify", str(cert_path), "--recompute"]) == 1
    assert "diagnostics.mean_sq_norm" in capsys.readouterr().out


def test_recompute_refuses_code_without_trust(fresh, capsys):
    _, cert_path, cert = fresh
    cert["request"]["trust_teacher_code"] = True
    write_certificate(cert_path, cert)
    assert run_cli(["verify", str(cert_path), "--recompute"]) == 2
    assert "--trust-code" in capsys.readouterr().err


def test_relative_paths_resolve_against_root(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    from .report_fixtures import write_inputs

    args = [a.replace(str(tmp_path / "run") + "/", "") for a in write_inputs(tmp_path / "run")]
    assert run_cli(["certify", *args, "--out", "rep", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    # Relative paths start where the certificate's paths_relative_to says (run/), not in this folder ...
    assert run_cli(["verify", "run/rep/certificate.json", "--recompute"]) == 0
    # ... unless --root names another folder.
    assert run_cli(["verify", "run/rep/certificate.json", "--root", "."]) == 1  # lat.npz is not in this folder
    assert run_cli(["verify", "run/rep/certificate.json", "--root", "run", "--recompute"]) == 0


def test_builtin_digits_hash_is_recomputed(tmp_path, capsys):
    # The recorded sha256 of builtin:digits, computed here as data.py documents it: the raw array.
    raw = load_digits().data
    expected = hashlib.sha256(np.ascontiguousarray(raw, dtype=np.float64).tobytes()).hexdigest()
    n = 40
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=n)
    np.savez(tmp_path / "lat.npz", mu=rng.normal(size=(n, 3)))
    np.savez(tmp_path / "probs.npz", probs=p)
    out = tmp_path / "rep"
    code = run_cli(
        [
            "certify",
            "--latents",
            str(tmp_path / "lat.npz"),
            "--teacher-probs",
            str(tmp_path / "probs.npz"),
            "--data",
            "digits",
            "--split",
            "test",
            "--limit",
            str(n),
            "--beta",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code in (0, 1)
    cert = json.loads((out / "certificate.json").read_text())
    digits = [r for r in cert["inputs"] if r["path"] == "builtin:digits"]
    assert digits and digits[0]["sha256"] == expected
    assert run_cli(["verify", str(out / "certificate.json"), "--recompute"]) == 0
    digits[0]["sha256"] = "0" * 64
    write_certificate(out / "certificate.json", cert)
    assert run_cli(["verify", str(out / "certificate.json")]) == 1
    assert "differs  data" in capsys.readouterr().out


# ------------------------------------------------------------------ invalid certificates → exit 2
def _set(path, value):
    def edit(cert):
        *parents, last = path
        target = cert
        for key in parents:
            target = target[key]
        target[last] = value(target[last]) if callable(value) else value

    return edit


EDITS = {
    "unknown schema": (_set(["schema"], "vae-audit-certificate/2"), "unknown schema version"),
    "not a certificate": (lambda c: c.pop("schema"), "no 'schema' key"),
    "missing key": (lambda c: c.pop("teacher_information"), "'teacher_information' is missing"),
    "margin ≠ I_T − L": (_set(["margin"], lambda v: v + 1e-6), "margin ≠ teacher_information − alignment_loss"),
    "I_T and L moved together": (
        lambda c: c.update(
            teacher_information=c["teacher_information"] + 0.1, alignment_loss=c["alignment_loss"] + 0.1
        ),
        "teacher_information ≠ teacher_marginal_entropy",
    ),
    "LCB edited": (_set(["margin_lcb"], lambda v: v + 0.01), "margin_lcb"),
    "verdict flipped": (_set(["verdict"], "not_certified"), "contradicts margin_lcb"),
    "min_margin raised": (_set(["min_margin"], 10.0), "contradicts margin_lcb"),
    "view bound edited": (_set(["view_gap", "bound"], lambda v: v * 0.5), "view_gap"),
    "view verdict flipped": (
        _set(["view_gap", "certified_under_both_views"], lambda v: not v),
        "certified_under_both_views",
    ),
    "per-class count": (_set(["per_class", 0, "count"], lambda v: v + 1), "per_class counts"),
    "witness K": (_set(["witness", "num_classes"], 7), "witness.num_classes"),
    "active units": (_set(["diagnostics", "active_units"], lambda v: v - 1), "active_units"),
    "path energy": (_set(["design", "path", 3, "energy"], lambda v: v * 2), "design.path[3].energy"),
    "path end": (_set(["design", "path", -1, "margin"], lambda v: v + 0.1), "t = 1"),
    "bad sha256": (_set(["inputs", 0, "sha256"], "abc"), "sha256"),
    "string number": (_set(["margin"], "0.5"), "finite number"),
    "meaning of the other verdict": (
        lambda c: c.update(meaning=c["meaning"].replace("Certified:", "Not certified:")),
        "'meaning'",
    ),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_inconsistent_certificate_is_invalid(audited, tmp_path, name, capsys):
    _, cert = audited
    edit, message = EDITS[name]
    broken = copy.deepcopy(cert)
    edit(broken)
    with pytest.raises(AuditInputError, match="invalid certificate") as info:
        check_certificate(broken)
    assert message in str(info.value)
    path = write_certificate(tmp_path / "certificate.json", broken)
    assert run_cli(["verify", str(path)]) == 2
    assert run_cli(["report", str(path), "--format", "html,md,junit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certificate.json"]  # nothing rendered


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"schema": "vae-audit-certificate/1", "margin": NaN}'])
def test_unreadable_certificate_is_invalid(tmp_path, text):
    path = tmp_path / "certificate.json"
    path.write_text(text)
    assert run_cli(["verify", str(path)]) == 2
    with pytest.raises(AuditInputError):
        load_certificate(path)


def test_missing_certificate_file(tmp_path):
    assert run_cli(["verify", str(tmp_path / "nope.json")]) == 2


@pytest.mark.parametrize("aligned,view", [(True, True), (False, False), (False, True)])
def test_certificates_written_by_certify_pass_the_check(tmp_path, aligned, view):
    code, cert = certify(tmp_path, aligned=aligned, view=view)
    assert code == (0 if aligned else 1)
    assert check_certificate(cert) is cert
    # The identities the check relies on, recomputed here from the certificate's own numbers.
    assert math.isclose(cert["margin"], cert["teacher_information"] - cert["alignment_loss"], abs_tol=1e-12)


def test_recompute_of_a_checkpoint_audit(tmp_path, capsys):
    # Model, teacher.pt and a data file: the encoder, the teacher and the model diagnostics all re-run.
    from .certify_fixtures import data_x, write_model, write_teacher

    write_model(tmp_path / "vae.safetensors")
    write_teacher(tmp_path / "teacher.pt")
    np.savez(tmp_path / "x.npz", x=data_x(50))
    out = tmp_path / "rep"
    code = run_cli(
        [
            "certify",
            "--model",
            str(tmp_path / "vae.safetensors"),
            "--teacher",
            str(tmp_path / "teacher.pt"),
            "--data",
            str(tmp_path / "x.npz"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code in (0, 1)
    assert {r["role"] for r in json.loads((out / "certificate.json").read_text())["inputs"]} == {
        "model",
        "teacher",
        "data",
    }
    assert run_cli(["verify", str(out / "certificate.json"), "--recompute"]) == 0
    assert "every number match" in capsys.readouterr().out
