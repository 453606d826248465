"""`audit train --resume`: a run interrupted after any epoch and resumed writes the bytes of the
uninterrupted run; a resume file that is not this run's, or not sound, is refused with one line."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from auditor.training.config import TrainConfig
from auditor.training.resume import resume_path
from auditor.training.run import train_to_file

from .cli_run import run
from .method_fixtures import save_digits_teacher

EPOCHS, PREFIT = 3, 2  # a prefit run: epochs 1-2 regress onto the analytic code, 3-5 the ELBO


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return save_digits_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def config() -> TrainConfig:
    return TrainConfig(method="prefit", epochs=EPOCHS, prefit_epochs=PREFIT, batch_size=200, device="cpu")


def cli_args(teacher: Path, out: Path, *extra) -> list:
    flags = f"--method prefit --epochs {EPOCHS} --prefit-epochs {PREFIT} --batch-size 200 --device cpu --data digits"
    return ["train", *flags.split(), "--teacher", teacher, "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def uninterrupted(teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run.safetensors"
    train_to_file(config(), "digits", "train", teacher, out)
    return out


def interrupt_after(epoch: int, teacher: Path, out: Path) -> None:
    """Run until ``epoch`` has finished, then stop as Ctrl-C would (the exception leaves the loop)."""

    def stop(row: dict) -> None:
        if row["epoch"] == epoch:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_to_file(config(), "digits", "train", teacher, out, on_epoch=stop)


@pytest.mark.parametrize("epoch", [PREFIT, PREFIT + 1], ids=["after-prefit", "mid-elbo"])
def test_a_resumed_run_writes_the_bytes_of_the_uninterrupted_run(epoch, teacher, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    interrupt_after(epoch, teacher, out)
    assert resume_path(out).is_file() and not out.exists()
    assert out.with_suffix(".csv").read_text().count("\n") == epoch + 2  # header, epoch 0 … epoch
    code, _, err = run(cli_args(teacher, out, "--resume"), capsys)
    assert code == 0, err
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert out.with_suffix(".csv").read_bytes() == uninterrupted.with_suffix(".csv").read_bytes()
    assert not resume_path(out).exists()  # a finished run keeps no resume file


def test_resume_without_a_resume_file_starts_from_the_beginning(teacher, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, _, err = run(cli_args(teacher, out, "--resume"), capsys)
    assert code == 0, err
    assert out.read_bytes() == uninterrupted.read_bytes()


@pytest.fixture
def interrupted(teacher, tmp_path) -> Path:
    out = tmp_path / "run.safetensors"
    interrupt_after(PREFIT + 1, teacher, out)
    return out


def rewritten(path: Path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_resume_file_of_another_run_or_an_unsound_one_is_refused(interrupted, teacher, capsys):
    path = resume_path(interrupted)
    good = path.read_bytes()

    def drop_param(payload):
        payload["model"].pop("decoder.0.bias")

    def widen_avg(payload):
        entry = payload["optimiser"]["state"][0]
        entry["exp_avg"] = torch.zeros(entry["exp_avg"].shape[0] + 1, *entry["exp_avg"].shape[1:])

    def nan_avg_sq(payload):
        payload["optimiser"]["state"][1]["exp_avg_sq"][0] = float("nan")

    def short_generator(payload):
        payload["generators"]["order"] = payload["generators"]["order"][:100]

    def unknown_phase(payload):
        payload["history"] = payload["history"].replace('"phase": "elbo"', '"phase": "melt"')

    def later_epoch(payload):
        payload["epoch"] = PREFIT + EPOCHS

    cases = [
        ("another lr", None, ["--lr", "1e-3"], "different run (it differs in: --lr)"),
        ("another seed", None, ["--seed", "3"], "it differs in: --seed"),
        ("another split", None, ["--split", "all"], "it differs in: data"),
        ("not a torch file", b"garbage", [], "not a resume file in torch's zip format"),
        ("legacy torch file", "legacy", [], "not a resume file in torch's zip format"),
        ("deflated record", "deflated", [], "is compressed, which torch.save never does"),
        ("truncated", "truncated", [], "not a readable zip file"),
        ("code in the pickle", "code", [], "not a readable resume file"),
        ("missing tensor", drop_param, [], "tensors do not match the architecture"),
        ("optimiser shape", widen_avg, [], "optimiser state 0 does not fit parameter 0"),
        ("optimiser nan", nan_avg_sq, [], "optimiser state 1 does not fit"),
        ("generator", short_generator, [], "not a generator state of this kind"),
        ("history", unknown_phase, [], "monitor history is not 4 rows"),
        ("finished epoch", later_epoch, [], "is not an unfinished epoch of this run"),
    ]
    for name, change, extra, message in cases:
        path.write_bytes(good)
        if change == "code":
            buffer = io.BytesIO()
            torch.save({"format": "vae-audit-resume/1", "x": _Payload()}, buffer)
            path.write_bytes(buffer.getvalue())
        elif change == "legacy":  # sizes torch would allocate from before reading them
            torch.save(torch.load(io.BytesIO(good), weights_only=True), path, _use_new_zipfile_serialization=False)
        elif change == "deflated":
            with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
                for info in source.infolist():
                    out.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
        elif change == "truncated":
            path.write_bytes(good[: len(good) // 2])
        elif isinstance(change, bytes):
            path.write_bytes(change)
        elif change is not None:
            rewritten(path, change)
        before = path.read_bytes()
        code, out, err = run(cli_args(teacher, interrupted, "--resume", *extra), capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)
        assert "this ran" not in out
        assert not interrupted.exists() and path.read_bytes() == before, name  # nothing written, nothing lost


def test_resume_keeps_a_finished_run_of_the_same_arguments_only(teacher, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    out.write_bytes(uninterrupted.read_bytes())
    out.with_suffix(".csv").write_bytes(uninterrupted.with_suffix(".csv").read_bytes())
    stamps = {path: path.stat().st_mtime_ns for path in (out, out.with_suffix(".csv"))}
    code, stdout, err = run([a for a in cli_args(teacher, out, "--resume") if a != "--quiet"], capsys)
    assert code == 0, err
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps  # nothing retrained or rewritten
    assert stdout.startswith(f"wrote {out}") and f"{PREFIT + EPOCHS} epochs" in stdout
    # Another run's checkpoint under the same name is not "finished": it is trained anew.
    code, _, err = run(cli_args(teacher, out, "--resume", "--seed", "1"), capsys)
    assert code == 0, err
    assert out.read_bytes() != uninterrupted.read_bytes()
