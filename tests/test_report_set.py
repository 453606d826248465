"""The reports of one run replace the folder's old set all together or not at all, and a report
folder that cannot be written is refused before the audit starts."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import auditor.cli.certify as certify_command
import auditor.sources.atomic as atomic

from .cli_run import run
from .report_fixtures import certify, write_inputs

ALL_FORMATS = "json,md,html,junit"


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _full_disk_on_call(monkeypatch, failing_call: int) -> None:
    """The disk fills up while the ``failing_call``-th file is written: half of it reaches the file."""
    real, calls = atomic._write_all, []

    def write_all(fd: int, data: bytes) -> None:
        calls.append(fd)
        if len(calls) == failing_call:
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(atomic, "_write_all", write_all)


def test_a_full_disk_on_the_second_file_leaves_the_old_set_intact(tmp_path, capsys, monkeypatch):
    code, _ = certify(tmp_path, aligned=True, formats=ALL_FORMATS)
    assert code == 0
    out = tmp_path / "report"
    before = _folder_bytes(out)
    assert sorted(before) == ["certificate.html", "certificate.json", "certificate.junit.xml", "certificate.md"]
    _full_disk_on_call(monkeypatch, 2)
    args = write_inputs(tmp_path, aligned=False)  # a different verdict: any mixed set would show
    code, _, err = run(["certify", *args, "--out", out, "--format", ALL_FORMATS, "--quiet"], capsys)
    assert code == 2 and err == "error: OSError: [Errno 28] No space left on device\n"
    assert _folder_bytes(out) == before  # byte for byte, and no temporary left beside them


def test_a_new_set_replaces_the_old_one_and_drops_formats_not_asked_for(tmp_path):
    certify(tmp_path, aligned=True, formats=ALL_FORMATS)
    code, cert = certify(tmp_path, aligned=False, formats="json,md")
    assert code == 1 and cert["verdict"] == "not_certified"
    out = tmp_path / "report"
    assert sorted(p.name for p in out.iterdir()) == ["certificate.json", "certificate.md"]
    assert "**not certified**" in (out / "certificate.md").read_text()


def test_report_leaves_the_old_renders_when_a_write_fails(tmp_path, capsys, monkeypatch):
    certify(tmp_path, formats=ALL_FORMATS)
    out = tmp_path / "report"
    before = _folder_bytes(out)
    _full_disk_on_call(monkeypatch, 3)
    code, _, _ = run(["report", out / "certificate.json", "--format", "md,html,junit"], capsys)
    assert code == 2 and _folder_bytes(out) == before


def test_a_failed_first_write_leaves_no_new_folder(tmp_path, capsys, monkeypatch):
    _full_disk_on_call(monkeypatch, 1)
    out = tmp_path / "new" / "reports"
    code, _, _ = run(["certify", *write_inputs(tmp_path), "--out", out, "--quiet"], capsys)
    assert code == 2 and not (tmp_path / "new").exists()


def test_an_interrupted_rename_keeps_whole_files_and_the_old_certificate(tmp_path, monkeypatch):
    """The documented limit: a crash between two renames mixes the sets, but every file is whole
    and certificate.json, renamed last, is still the old one."""
    folder = tmp_path / "set"
    atomic.replace_files_together(folder, {"a.md": b"old a", "b.md": b"old b", "certificate.json": b"old"})
    real, renames = os.replace, []

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise OSError(errno.EIO, "the machine went down")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError):
        atomic.replace_files_together(folder, {"a.md": b"new a", "b.md": b"new b", "certificate.json": b"new"})
    assert _folder_bytes(folder) == {"a.md": b"new a", "b.md": b"old b", "certificate.json": b"old"}


# ------------------------------------------------------------------ --out checked before the audit
@pytest.fixture
def no_audit(monkeypatch):
    """Fails the test if the audit pass is entered."""

    def entered(request, progress=None):
        raise AssertionError("the audit ran although --out is unusable")

    monkeypatch.setattr(certify_command, "run_audit", entered)


def _certify_into(tmp_path, out, capsys) -> tuple[int, str]:
    code, _, err = run(["certify", *write_inputs(tmp_path), "--out", out], capsys)
    return code, err


def test_out_naming_a_file_is_refused_at_once(tmp_path, capsys, no_audit):
    (tmp_path / "taken").write_text("mine")
    code, err = _certify_into(tmp_path, tmp_path / "taken", capsys)
    assert code == 2 and "exists and is not a folder" in err
    assert (tmp_path / "taken").read_text() == "mine"


def test_out_below_a_file_is_refused_at_once(tmp_path, capsys, no_audit):
    (tmp_path / "taken").write_text("mine")
    code, err = _certify_into(tmp_path, tmp_path / "taken" / "reports", capsys)
    assert code == 2 and "cannot be created" in err and "is not a folder" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nobody can create files")
def test_out_where_no_file_can_be_created_is_refused_at_once(tmp_path, capsys, no_audit):
    code, err = _certify_into(tmp_path, Path("/proc/vae-audit-reports"), capsys)
    assert code == 2 and "cannot write into /proc" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_refused_at_once(tmp_path, capsys, no_audit):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = _certify_into(tmp_path, locked / "reports", capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write into" in err


def test_report_out_is_checked_too(tmp_path, capsys):
    certify(tmp_path, formats="json")
    (tmp_path / "taken").write_text("mine")
    code, _, err = run(["report", tmp_path / "report" / "certificate.json", "--out", tmp_path / "taken"], capsys)
    assert code == 2 and "exists and is not a folder" in err


def test_the_folder_probe_leaves_nothing_behind(tmp_path):
    assert atomic.folder_problem(tmp_path / "a" / "b") is None
    assert atomic.folder_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--method", "aligned", "--teacher", "missing.pt", "--out", "{taken}/model.safetensors"],
        ["reproduce", "--teacher", "missing.pt", "--out", "{taken}/table"],
        ["reproduce", "--out", "{free}/table", "--models-out", "{taken}/models"],
        ["teacher", "fit", "--rank", "4", "--num-classes", "3", "--out", "{taken}/teacher.pt"],
        ["teacher", "search", "--out", "{taken}/teacher.pt"],
        ["design", "--teacher", "missing.pt", "--beta", "2", "--latent-dim", "4", "--witness-out", "{taken}/w.json"],
        ["design", "--teacher", "missing.pt", "--beta", "2", "--latent-dim", "4", "--csv", "{taken}/path.csv"],
    ],
)
def test_every_command_refuses_an_unusable_output_before_reading_anything(tmp_path, capsys, command):
    """The output's folder is checked first: the data (which does not exist either) is never read."""
    (tmp_path / "taken").write_text("mine")
    args = [part.format(taken=tmp_path / "taken", free=tmp_path / "free") for part in command]
    code, _, err = run([*args, "--data", str(tmp_path / "missing.npy")], capsys)
    flag = next(part for part in command if part.startswith("--") and "{taken}" in command[command.index(part) + 1])
    assert code == 2 and err.startswith(f"error: {flag} ") and "is not a folder" in err, err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "mine" and not (tmp_path / "free").exists()


def test_train_refuses_a_folder_as_its_checkpoint_before_reading_anything(tmp_path, capsys):
    """It used to train, then fail writing the checkpoint over the folder."""
    args = ["train", "--method", "aligned", "--teacher", "missing.pt", "--out", tmp_path]
    code, _, err = run([*args, "--data", tmp_path / "missing.npy"], capsys)
    assert code == 2 and err.startswith(f"error: --out {tmp_path} is a folder; give a file's path, e.g. ")
