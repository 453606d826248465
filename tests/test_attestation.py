"""`--format intoto`: the certificate as an in-toto Statement v1, checked against the spec's field
rules written out below (not against our own reader), with subject digests recomputed from the
files; and `audit verify` / `audit report` reading a Statement back."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from auditor.certificate.attestation import PREDICATE_TYPE, statement

from . import reference as ref
from .report_fixtures import certify, run_cli, write_certificate

# ------------------------------------------------------------------ the in-toto v1 rules
# From the in-toto Attestation Framework v1: spec/v1/statement.md, resource_descriptor.md,
# digest_set.md and field_types.md (TypeURI: an RFC 3986 URI).
STATEMENT_FIELDS = {"_type", "subject", "predicateType", "predicate"}
DESCRIPTOR_FIELDS = {"name", "uri", "digest", "content", "downloadLocation", "mediaType", "annotations"}
HEX_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40}
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
LOWER_HEX = re.compile(r"[0-9a-f]+")


def intoto_v1_violations(doc) -> list[str]:
    """Every way ``doc`` breaks the in-toto Statement v1 field rules (empty: a valid Statement)."""
    if not isinstance(doc, dict):
        return ["a Statement is a JSON object"]
    out = [f"unknown field {key!r}" for key in doc if key not in STATEMENT_FIELDS]
    if doc.get("_type") != "https://in-toto.io/Statement/v1":
        out.append("_type must be exactly https://in-toto.io/Statement/v1")
    if not isinstance(doc.get("predicateType"), str) or not URI.fullmatch(doc["predicateType"]):
        out.append("predicateType must be a URI")
    if "predicate" in doc and not isinstance(doc["predicate"], dict):
        out.append("predicate, when set, is an object")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        return [*out, "subject must be a non-empty array"]
    names = []
    for i, subject in enumerate(subjects):
        if not isinstance(subject, dict):
            out.append(f"subject[{i}] must be an object")
            continue
        out += [f"subject[{i}]: unknown field {key!r}" for key in subject if key not in DESCRIPTOR_FIELDS]
        if "name" in subject:
            if not isinstance(subject["name"], str):
                out.append(f"subject[{i}].name must be a string")
            names.append(subject["name"])
        digest = subject.get("digest")
        if not isinstance(digest, dict) or not digest:
            out.append(f"subject[{i}].digest is required and must map algorithms to digests")
            continue
        for algorithm, value in digest.items():
            if not isinstance(value, str) or not LOWER_HEX.fullmatch(value):
                out.append(f"subject[{i}].digest.{algorithm} must be lowercase hex")
            elif algorithm in HEX_LENGTHS and len(value) != HEX_LENGTHS[algorithm]:
                out.append(f"subject[{i}].digest.{algorithm} has the wrong length")
    if len(names) != len(set(names)):
        out.append("subject names should be unique")
    return out


@pytest.mark.parametrize(
    "broken, rule",
    [
        ({"_type": "https://in-toto.io/Statement/v0.1"}, "_type"),
        ({"subject": []}, "non-empty"),
        ({"predicateType": "vae audit"}, "URI"),
        ({"subject": [{"name": "m"}]}, "digest is required"),
        ({"subject": [{"name": "m", "digest": {"sha256": "ABC"}}]}, "lowercase hex"),
        ({"subject": [{"name": "m", "digest": {"sha256": "ab"}}]}, "wrong length"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_the_rules_catch_what_they_say(broken, rule):
    valid = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "a" * 64}}],
        "predicateType": "https://example.com/p/v1",
        "predicate": {},
    }
    assert intoto_v1_violations(valid) == []
    problems = intoto_v1_violations({**valid, **broken})
    assert problems and any(rule in p for p in problems)


# ------------------------------------------------------------------ what audit certify writes
def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relative_base(document: Path, cert: dict) -> Path:
    """docs/certificate.md: relative paths start at paths_relative_to, taken from the document's folder."""
    return (document.parent / cert["paths_relative_to"]).resolve()


@pytest.fixture()
def attested(tmp_path):
    code, cert = certify(tmp_path, formats="json,intoto")
    assert code == 0
    return tmp_path, tmp_path / "report" / "certificate.intoto.json", cert


def test_statement_is_valid_in_toto_and_its_subjects_are_the_files(attested):
    folder, path, cert = attested
    doc = json.loads(path.read_text())
    assert intoto_v1_violations(doc) == []
    assert doc["predicateType"] == PREDICATE_TYPE
    assert doc["predicate"] == cert  # the predicate is the certificate, unchanged
    base = relative_base(path, doc["predicate"])
    assert [s["name"] for s in doc["subject"]] == [str(folder / "lat.npz")]  # the model file (latents), not the teacher
    for subject in doc["subject"]:
        assert subject["digest"] == {"sha256": sha256_of(base / subject["name"])}


def test_a_checkpoint_model_is_the_subject(tmp_path):
    from .certify_fixtures import data_x, write_model, write_teacher

    model = write_model(tmp_path / "vae.safetensors")
    write_teacher(tmp_path / "teacher.pt")
    np.savez(tmp_path / "x.npz", x=data_x(40))
    args = ["--model", model, "--teacher", tmp_path / "teacher.pt", "--data", tmp_path / "x.npz"]
    code = run_cli(["certify", *map(str, args), "--out", str(tmp_path / "r"), "--format", "intoto", "--quiet"])
    assert code in (0, 1)
    doc = json.loads((tmp_path / "r" / "certificate.intoto.json").read_text())
    assert intoto_v1_violations(doc) == []
    # the checkpoint's subject: its bytes, and the state-dict digest of the weights it holds
    digest = {"sha256": sha256_of(model), "vae-audit-state-dict-sha256": ref.safetensors_file_digest(model)}
    assert doc["subject"] == [{"name": str(model), "digest": digest}]


def test_state_dict_digest_joins_the_weights_subject(tmp_path):
    # A real --arch model with its weights in a safetensors file: the model source computes the
    # state-dict digest, which the test recomputes from the file's bytes (tests/reference.py).
    from safetensors.torch import save_file

    (tmp_path / "factory.py").write_text(
        "import torch\n"
        "class Enc(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(6, 3)\n"
        "    def encode(self, x):\n"
        "        return self.lin(x.reshape(len(x), -1))\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Enc()\n"
    )
    save_file({k: v.contiguous() for k, v in _module_state(tmp_path).items()}, str(tmp_path / "weights.safetensors"))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((40, 6), dtype=np.float32))
    probs = np.full((40, 3), 1 / 3)
    np.savez(tmp_path / "p.npz", probs=probs)
    args = [
        "--arch",
        f"{tmp_path / 'factory.py'}:make",
        "--model",
        tmp_path / "weights.safetensors",
        "--teacher-probs",
        tmp_path / "p.npz",
        "--data",
        tmp_path / "x.npz",
        "--beta",
        "1",
    ]
    code = run_cli(["certify", *map(str, args), "--out", str(tmp_path / "r"), "--format", "intoto", "--quiet"])
    assert code in (0, 1)
    doc = json.loads((tmp_path / "r" / "certificate.intoto.json").read_text())
    assert intoto_v1_violations(doc) == []
    (weights,) = [s for s in doc["subject"] if s["name"].endswith("weights.safetensors")]
    assert weights["digest"] == {
        "sha256": hashlib.sha256((tmp_path / "weights.safetensors").read_bytes()).hexdigest(),
        "vae-audit-state-dict-sha256": ref.safetensors_file_digest(tmp_path / "weights.safetensors"),
    }


def _module_state(folder: Path) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("attest_factory", folder / "factory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make().state_dict()


def test_no_model_file_no_statement(attested, tmp_path, capsys):
    _, _, cert = attested
    cert = copy.deepcopy(cert)
    cert["inputs"] = [r for r in cert["inputs"] if r["role"] != "latents"]
    path = write_certificate(tmp_path / "c.json", cert)
    assert run_cli(["report", str(path), "--format", "md,intoto", "--out", str(tmp_path / "out")]) == 2
    assert "needs a model file to attest" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written, not even the Markdown


# ------------------------------------------------------------------ audit verify reads it back
def test_verify_accepts_the_statement_and_checks_its_subjects(attested, capsys):
    folder, path, _ = attested
    assert run_cli(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok +subject +\S+lat\.npz$", out, re.M)
    assert "all 2 inputs and 1 subject match their sha256" in out
    with open(folder / "lat.npz", "ab") as handle:
        handle.write(b"\0")
    assert run_cli(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^differs +subject", out, re.M) and re.search(r"^differs +latents", out, re.M)


def _edited(doc: dict, edit) -> dict:
    doc = copy.deepcopy(doc)
    edit(doc)
    return doc


STATEMENT_EDITS = {
    "subject of another file": (
        lambda d: d["subject"][0]["digest"].update(sha256="0" * 64),
        "not a model file the certificate certified",
    ),
    "subject is the teacher": (
        lambda d: d["subject"][0]["digest"].update(sha256=d["predicate"]["inputs"][1]["sha256"]),
        "not a model file the certificate certified",
    ),
    "state-dict digest not recorded": (
        lambda d: d["subject"][0]["digest"].update({"vae-audit-state-dict-sha256": "ab" * 32}),
        "vae-audit-state-dict-sha256",
    ),
    "no sha256": (lambda d: d["subject"][0].update(digest={"sha512": "ab" * 64}), "no lowercase hex sha256"),
    "no subject": (lambda d: d.update(subject=[]), "non-empty"),
    "another predicate type": (lambda d: d.update(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
    "in-toto v0.1": (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
    "predicate's numbers edited": (lambda d: d["predicate"].update(margin=9.0), "invalid certificate"),
}


@pytest.mark.parametrize("name", list(STATEMENT_EDITS))
def test_an_inconsistent_statement_is_invalid(attested, tmp_path, name, capsys):
    _, path, _ = attested
    edit, message = STATEMENT_EDITS[name]
    broken = write_certificate(tmp_path / "s.json", _edited(json.loads(path.read_text()), edit))
    assert run_cli(["verify", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_statement_named_like_actions_attest_names_it(attested, tmp_path):
    # actions/attest names the subject by its file name: the digest binds it, not the name.
    _, path, _ = attested
    doc = _edited(json.loads(path.read_text()), lambda d: d["subject"][0].update(name="lat.npz"))
    assert run_cli(["verify", str(write_certificate(path.parent / "github.json", doc))]) == 0


# ------------------------------------------------------------------ audit report renders it
def test_report_renders_the_same_statement_and_rebases_it(attested, tmp_path, monkeypatch):
    folder, path, cert = attested
    assert run_cli(["report", str(folder / "report" / "certificate.json"), "--format", "intoto"]) == 0
    assert json.loads(path.read_text()) == statement(cert)  # the same dict in, the same Statement out
    elsewhere = tmp_path / "deep" / "er"
    assert run_cli(["report", str(path), "--format", "intoto,md", "--out", str(elsewhere)]) == 0
    moved = json.loads((elsewhere / "certificate.intoto.json").read_text())
    assert moved["subject"] == json.loads(path.read_text())["subject"]
    assert relative_base(elsewhere / "certificate.intoto.json", moved["predicate"]) == relative_base(path, cert)
    monkeypatch.chdir(elsewhere)
    assert run_cli(["verify", "certificate.intoto.json"]) == 0
