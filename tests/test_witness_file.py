"""``witness.json`` (docs/formats.md): it round-trips, every malformed file and every contradiction is one
``error:`` line with exit 2 and no report, and ``audit certify --witness`` uses it, hashes it and lists it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from auditor import load_witness
from auditor.sources.witness_file import MAX_BYTES, SCHEMA, WitnessSettings, save_witness

from .cli_run import run
from .report_fixtures import BETA, D, K, write_inputs

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MODEL = ROOT / "models" / "digits" / "aligned-kl1-s0.safetensors"  # witness metadata: K 10, β 2, offset 0
DIGITS_TEACHER = ROOT / "models" / "digits" / "teacher.pt"
GOOD = {"schema": SCHEMA, "num_classes": K, "beta": BETA, "offset": 0}


def latents_args(folder: Path) -> list[str]:
    """Precomputed latents (d = 5) and teacher probabilities (K = 4), without the witness flags."""
    args = write_inputs(folder)
    assert args[-2] == "--beta"
    return args[:-2]


def certify(folder: Path, args: list, capsys) -> tuple[int, str, str]:
    return run(["certify", *args, "--out", folder / "report", "--quiet"], capsys)


def refused(folder: Path, args: list, capsys, *fragments: str) -> None:
    code, out, err = certify(folder, args, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err
    assert not (folder / "report").exists()


def test_round_trip(tmp_path):
    for name, settings in (
        ("full.json", WitnessSettings(10, 2.0, 1, 16, "ab" * 32)),
        ("open.json", WitnessSettings(3, 0.5)),  # d and the teacher left open
    ):
        save_witness(tmp_path / name, settings)
        assert load_witness(tmp_path / name) == settings
        written = json.loads((tmp_path / name).read_text())
        assert list(written)[:4] == ["schema", "num_classes", "beta", "offset"]
        assert ("latent_dim" in written) == (settings.latent_dim is not None)


BAD_FILES = [
    ("not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[1, 2]", "holds one JSON object, found list"),
    ({**GOOD, "schema": "vae-audit-witness/2"}, "schema must be 'vae-audit-witness/1'"),
    ({k: v for k, v in GOOD.items() if k != "beta"}, "missing keys: beta"),
    ({**GOOD, "betta": 2}, "unknown keys: 'betta'"),
    ({**GOOD, "num_classes": True}, "must be integers"),
    ({**GOOD, "num_classes": 4.0}, "must be integers"),
    ({**GOOD, "latent_dim": "5"}, "must be integers"),
    ({**GOOD, "beta": "2"}, "beta must be a finite number"),
    (
        '{"schema": "vae-audit-witness/1", "num_classes": 4, "beta": NaN, "offset": 0}',
        "NaN is not a number JSON allows",
    ),
    ({**GOOD, "beta": -1.0}, "beta must be a finite number > 0"),
    ({**GOOD, "offset": -1}, "offset must be >= 0"),
    ({**GOOD, "num_classes": 1}, "at least 2 classes"),
    ({**GOOD, "latent_dim": 2}, "too small"),
    ({**GOOD, "teacher_sha256": "xyz"}, "64 lowercase hex digits"),
    ({**GOOD, "teacher_sha256": 5}, "teacher_sha256 must be a string"),
    ('{"schema": "vae-audit-witness/1", "num_classes": 4, "beta": 2, "beta": 3, "offset": 0}', "'beta' is given twice"),
    (json.dumps(GOOD) + " " * MAX_BYTES, "too large for a witness file"),
]


@pytest.mark.parametrize("content, fragment", BAD_FILES)
def test_a_malformed_witness_file_is_refused(tmp_path, capsys, content, fragment):
    path = tmp_path / "witness.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    refused(tmp_path, [*latents_args(tmp_path), "--witness", path], capsys, str(path), fragment)


def test_a_missing_witness_file_is_refused(tmp_path, capsys):
    args = latents_args(tmp_path)
    refused(tmp_path, [*args, "--witness", tmp_path / "none.json"], capsys, "no such witness file")
    refused(tmp_path, [*args, "--witness", tmp_path], capsys, "no such witness file")


def good_file(folder: Path, **changes) -> Path:
    path = folder / "witness.json"
    path.write_text(json.dumps({**GOOD, **changes}))
    return path


def test_the_witness_file_gives_the_witness_and_is_hashed_listed_and_verified(tmp_path, capsys):
    args = latents_args(tmp_path)
    path = good_file(tmp_path, latent_dim=D)
    assert certify(tmp_path, [*args, "--witness", path], capsys)[0] == 0
    cert = json.loads((tmp_path / "report" / "certificate.json").read_text())
    assert cert["witness"] == {
        "num_classes": K,
        "latent_dim": D,
        "beta": BETA,
        "offset": 0,
        "source": f"witness file {path}",
    }
    assert cert["inputs"][-1] == {
        "role": "witness",
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert cert["request"]["witness"] == str(path)
    # The same numbers as the flags give, and other numbers for another β: the file's values are the ones used.
    assert certify(tmp_path / "flags", [*args, "--beta", BETA], capsys)[0] == 0
    assert json.loads((tmp_path / "flags" / "report" / "certificate.json").read_text())["margin"] == cert["margin"]
    certificate = tmp_path / "report" / "certificate.json"
    assert run(["verify", certificate, "--recompute"], capsys)[0] == 0
    path.write_text(json.dumps({**GOOD, "beta": 1.0}))
    assert run(["verify", certificate], capsys)[0] == 1  # the certified witness file changed
    code, _, _ = certify(tmp_path / "other", [*args, "--witness", path], capsys)
    other = json.loads((tmp_path / "other" / "report" / "certificate.json").read_text())
    assert code in (0, 1) and other["witness"]["beta"] == 1.0 and other["margin"] != cert["margin"]


def test_contradictions_are_refused(tmp_path, capsys):
    args = latents_args(tmp_path)
    refused(
        tmp_path, [*args, "--witness", good_file(tmp_path), "--beta", "2"], capsys, "fixes the witness: drop --beta"
    )
    refused(
        tmp_path,
        [*args, "--witness", good_file(tmp_path, latent_dim=D + 1)],
        capsys,
        f"designed for latent dimension d={D + 1}",
        f"have d={D}",
    )
    refused(tmp_path, [*args, "--witness", good_file(tmp_path, num_classes=K - 1)], capsys, f"the teacher gives K={K}")


def digits_args(witness: Path) -> list:
    return [
        "--model",
        DIGITS_MODEL,
        "--teacher",
        DIGITS_TEACHER,
        "--data",
        "digits",
        "--split",
        "test",
        "--witness",
        witness,
    ]


def test_a_witness_file_must_agree_with_the_checkpoint_and_its_teacher(tmp_path, capsys):
    teacher_sha = hashlib.sha256(DIGITS_TEACHER.read_bytes()).hexdigest()
    digits = {"num_classes": 10, "beta": 2.0, "offset": 0}
    refused(
        tmp_path,
        digits_args(good_file(tmp_path, **{**digits, "beta": 3.0})),
        capsys,
        "(beta=3.0) contradicts the witness fixed in",
        str(DIGITS_MODEL),
    )
    refused(tmp_path, digits_args(good_file(tmp_path, **{**digits, "offset": 1})), capsys, "(offset=1) contradicts")
    refused(
        tmp_path,
        digits_args(good_file(tmp_path, **digits, teacher_sha256="0" * 64)),
        capsys,
        "designed with the teacher of sha256 000000000000",
        f"has sha256 {teacher_sha[:12]}",
    )
    path = good_file(tmp_path, **digits, latent_dim=16, teacher_sha256=teacher_sha)
    assert certify(tmp_path, digits_args(path), capsys)[0] == 0
    cert = json.loads((tmp_path / "report" / "certificate.json").read_text())
    assert cert["witness"]["source"] == f"metadata of {DIGITS_MODEL}, matching witness file {path}"
    assert [i["role"] for i in cert["inputs"]] == ["data", "model", "teacher", "witness"]
