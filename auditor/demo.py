"""`make demo`: the main job on the built-in data, end to end, in well under a minute on a CPU.

1. fit a PCA(20) → 10-component diagonal-GMM teacher on digits' training split;
2. build a small `mlp` VAE (64 → 128 → 16 latents) and train it briefly on the training split with
   the ELBO plus the witness alignment loss against that teacher (β = 2);
3. save both in the documented formats and run `audit certify` on the test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from .checkpoint import save_checkpoint
from .cli import main as audit_main
from .data import open_dataset
from .nets import build_model
from .teacher_fit import fit_pca_gmm, save_teacher
from .witness import WitnessSpec, witness_matrix

ARCH = {"name": "mlp", "input_shape": [64], "hidden": [128], "latent_dim": 16, "activation": "relu", "likelihood": "bernoulli"}
WITNESS = {"num_classes": 10, "beta": 2.0, "offset": 0}


def train_demo_model(x: torch.Tensor, teacher, epochs: int = 60, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ARCH)
    S = torch.as_tensor(witness_matrix(WitnessSpec(10, 16, WITNESS["beta"])), dtype=torch.float32)
    with torch.no_grad():
        p = teacher(x).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(128):
            mu, logvar = model.encode(x[idx])
            z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
            recon = F.binary_cross_entropy_with_logits(model.decode(z), x[idx], reduction="sum") / len(idx)
            kl = 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum() / len(idx)
            align = F.kl_div(torch.log_softmax(WITNESS["beta"] * mu @ S, 1), p[idx], reduction="batchmean")
            loss = recon + kl + 10.0 * align
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    train = open_dataset("digits", "train")
    x = torch.from_numpy(train.read(0, train.num_samples))
    teacher = fit_pca_gmm(x.numpy(), rank=20, num_classes=10, temperature=1.0, seed=0)
    save_teacher(teacher, args.out / "teacher.pt")
    model = train_demo_model(x, teacher)
    save_checkpoint(args.out / "demo-vae.safetensors", model, ARCH, WITNESS, {"method": "demo", "seed": 0})
    audit_main([
        "certify", "--model", str(args.out / "demo-vae.safetensors"), "--teacher", str(args.out / "teacher.pt"),
        "--data", "digits", "--split", "test", "--out", str(args.out / "report"),
    ])


if __name__ == "__main__":
    main()
