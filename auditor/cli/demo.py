"""`make demo`: the main job on the built-in data, end to end, in well under a minute on a CPU.

1. fit a PCA(16) → 10-component diagonal-GMM teacher at temperature 8 on digits' training split
   (the teacher `audit teacher search --data digits` picks);
2. train a small `mlp` VAE (64 → 128 → 16 latents, β = 2) on the training split with the reference
   trainer (`audit train --method aligned`: the ELBO plus α = 10 times the raw witness alignment
   loss), writing the checkpoint and its per-epoch monitor CSV;
3. run `audit certify` on the test split (JSON, Markdown and HTML reports), then say what to try next.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..sources.datasets.registry import open_dataset
from ..sources.teachers.files import save_teacher
from ..teachers.fit import fit_pca_gmm
from ..training.config import TrainConfig
from ..training.run import train_to_file
from .app import main as audit_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    train = open_dataset("digits", "train")
    teacher = fit_pca_gmm(train.read(0, train.num_samples), rank=16, num_classes=10, temperature=8.0, seed=0)
    save_teacher(teacher, args.out / "teacher.pt")
    model = args.out / "demo-vae.safetensors"
    result = train_to_file(
        TrainConfig(method="aligned", seed=0, epochs=args.epochs), "digits", "train", args.out / "teacher.pt", model
    )
    last = result.history[-1]
    print(
        f"trained {model} ({result.epochs_run} epochs): training-split margin {last['margin']:.3f} nats; "
        f"per-epoch monitor in {model.with_suffix('.csv')}"
    )
    report = args.out / "report"
    teacher_path = args.out / "teacher.pt"
    try:
        audit_main(
            [
                "certify",
                "--model",
                str(model),
                "--teacher",
                str(teacher_path),
                "--data",
                "digits",
                "--split",
                "test",
                "--format",
                "json,md,html",
                "--out",
                str(report),
            ]
        )
    except SystemExit:  # the verdict's exit code: print what to do next, then exit with it
        print(next_steps(report, model, teacher_path))
        raise


def next_steps(report: Path, model: Path, teacher: Path) -> str:
    """What to try after the demo, with the commands spelled as this installation runs them."""
    audit = _audit_command()
    return (
        "\nNext:\n"
        f"  open {report / 'certificate.html'} in a browser: the verdict, what it means and the plots\n"
        f"  {audit} verify {report / 'certificate.json'}              # are the certified files unchanged?\n"
        f"  {audit} verify {report / 'certificate.json'} --recompute  # re-run the audit, compare every number\n"
        f"  {audit} certify --model YOUR_MODEL.safetensors --teacher {teacher} --data digits --split test\n"
        '  and for a model from your own code: README.md, "Audit your own model".'
    )


def _audit_command() -> str:
    """``audit`` as this interpreter's environment installs it (``.venv/bin/audit`` under make)."""
    installed = Path(sys.executable).parent / "audit"
    if not installed.exists():
        return "audit"
    with contextlib.suppress(ValueError):
        return str(installed.relative_to(Path.cwd()))
    return str(installed)


if __name__ == "__main__":
    main()
