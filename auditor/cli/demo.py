"""`make demo`: the main job on the built-in data, end to end, in well under a minute on a CPU.

1. fit a PCA(16) → 10-component diagonal-GMM teacher at temperature 8 on digits' training split
   (the teacher `audit teacher search --data digits` picks);
2. train a small `mlp` VAE (64 → 128 → 16 latents, β = 2) on the training split with the reference
   trainer (`audit train --method aligned`: the ELBO plus α = 10 times the raw witness alignment
   loss), writing the checkpoint and its per-epoch monitor CSV;
3. run `audit certify` on the test split.
"""

from __future__ import annotations

import argparse
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
    audit_main(
        [
            "certify",
            "--model",
            str(model),
            "--teacher",
            str(args.out / "teacher.pt"),
            "--data",
            "digits",
            "--split",
            "test",
            "--out",
            str(args.out / "report"),
        ]
    )


if __name__ == "__main__":
    main()
