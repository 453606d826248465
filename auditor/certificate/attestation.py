"""The certificate as an in-toto Statement v1: the attestation that release pipelines sign.

An in-toto Statement binds a *predicate* to the artifacts it is about, its *subjects*, each named
by its digests. Ours (docs/certificate.md#the-in-toto-statement):

- ``_type``: ``https://in-toto.io/Statement/v1``;
- ``subject``: one entry per model file the certificate certified — every input whose role is
  ``model``, ``latents`` or begins with ``model-`` — as ``{"name": <path as recorded>, "digest":
  {"sha256": <hex>}}``; where the certificate's ``model`` entry records the digest of the loaded
  weights (``weights_digest.sha256``, docs/formats.md#the-state-dict-digest) and one file holds
  those weights (a single input of role ``model``), that file's subject carries it too, under the
  algorithm name ``vae-audit-state-dict-sha256`` (lowercase hex; tools that do not know it ignore
  it, as the in-toto spec requires). Weights sharded over several files get no such digest: it
  describes the set, not any one file;
- ``predicateType``: :data:`PREDICATE_TYPE`, whose version follows the certificate's schema;
- ``predicate``: the certificate itself, unchanged.

A Statement read back is checked field by field against the in-toto rules, its predicate as any
certificate (:func:`auditor.certificate.check.check_certificate`), and each subject against the
certificate: a subject whose sha256 is not one of the certified model files, or whose state-dict
digest is not the recorded one, makes the Statement invalid. Signatures are not checked here:
that is the signing tool's job (``cosign verify-blob-attestation``, ``gh attestation verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, NoReturn

from ..errors import AuditInputError
from .check import SHA256_HEX, check_certificate, read_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# Ours; it names the schema and need not resolve. /v1 is schema "vae-audit-certificate/1".
PREDICATE_TYPE = "https://vae-audit.dev/certificate/v1"
STATE_DICT_ALGORITHM = "vae-audit-state-dict-sha256"  # the same digest as a subject's digest algorithm


class Subject(NamedTuple):
    name: str
    sha256: str


def is_subject_role(role: str) -> bool:
    """Inputs of these roles are the model files a Statement attests."""
    return role in ("model", "latents") or role.startswith("model-")


def recorded_state_dict_digest(cert: dict) -> str | None:
    """The digest of the certified weights that the model source recorded, if it computed one."""
    digest = ((cert.get("model") or {}).get("weights_digest") or {}).get("sha256")
    return digest if isinstance(digest, str) else None


def statement_subjects(cert: dict) -> list[dict]:
    """The Statement's ``subject`` list for a checked certificate (empty when it names no model file)."""
    state_dict = recorded_state_dict_digest(cert)
    weight_files = [record["path"] for record in cert["inputs"] if record["role"] == "model"]
    subjects: list[dict] = []
    for record in cert["inputs"]:
        if not is_subject_role(record["role"]):
            continue
        digest = {"sha256": record["sha256"]}
        if isinstance(state_dict, str) and weight_files == [record["path"]]:
            digest[STATE_DICT_ALGORITHM] = state_dict
        subject = {"name": record["path"], "digest": digest}
        if subject not in subjects:
            subjects.append(subject)
    return subjects


def statement(cert: dict) -> dict:
    """The in-toto Statement of a checked certificate."""
    subjects = statement_subjects(cert)
    if not subjects:
        raise AuditInputError(
            "an in-toto Statement needs a model file to attest, and this certificate names none "
            "(an --arch model without --model weights)"
        )
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": cert}


def load_attested(path: str | Path) -> tuple[dict, list[Subject] | None]:
    """A checked certificate from ``certificate.json`` or from an in-toto Statement that carries
    one, with the Statement's subjects (None for a bare certificate)."""
    value = read_json(path)
    if isinstance(value, dict) and "_type" in value:
        return check_statement(value, where=str(path))
    return check_certificate(value, where=str(path)), None


def check_statement(value: dict, where: str) -> tuple[dict, list[Subject]]:
    """(the certificate, its subjects) of a Statement; AuditInputError when anything is off."""

    def fail(message: str) -> NoReturn:
        raise AuditInputError(f"{where}: invalid in-toto Statement: {message}")

    if value.get("_type") != STATEMENT_TYPE:
        fail(f"_type must be {STATEMENT_TYPE!r}, found {value.get('_type')!r}")
    if value.get("predicateType") != PREDICATE_TYPE:
        fail(f"predicateType {value.get('predicateType')!r} is not a vae-audit certificate ({PREDICATE_TYPE!r})")
    cert = value.get("predicate")
    if not isinstance(cert, dict):
        fail("the predicate must be an object: the certificate")
    check_certificate(cert, where=f"{where}: predicate")
    raw = value.get("subject")
    if not isinstance(raw, list) or not raw:
        fail("'subject' must be a non-empty list")
    certified = {r["sha256"] for r in cert["inputs"] if is_subject_role(r["role"])}
    state_dict = recorded_state_dict_digest(cert)
    subjects = []
    for i, entry in enumerate(raw):
        digest = entry.get("digest") if isinstance(entry, dict) else None
        name = entry.get("name", "_") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            fail(f"subject[{i}].name must be a string")
        if not isinstance(digest, dict) or not digest or not all(isinstance(v, str) for v in digest.values()):
            fail(f"subject[{i}].digest must be a non-empty object of algorithm names to digests")
        sha256 = digest.get("sha256")
        if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
            fail(f"subject[{i}] has no lowercase hex sha256 digest, the one this tool checks")
        if sha256 not in certified:
            fail(f"subject[{i}] ({name!r}) has sha256 {sha256}, which is not a model file the certificate certified")
        if STATE_DICT_ALGORITHM in digest and digest[STATE_DICT_ALGORITHM] != state_dict:
            fail(
                f"subject[{i}] ({name!r}) has a {STATE_DICT_ALGORITHM} that is not the certificate's model.weights_digest"
            )
        subjects.append(Subject(name, sha256))
    return cert, subjects
