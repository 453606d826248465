"""A VAE of your own, trained in a plain PyTorch loop to be certifiable: design, align, monitor, certify.

Run from the repository root (a few seconds on a CPU)::

    audit design --teacher models/digits/teacher.pt --data digits --split train \\
        --beta 2 --latent-dim 16 --witness-out build/witness.json
    python examples/pytorch_loop.py --teacher models/digits/teacher.pt \\
        --witness build/witness.json --out build/pytorch-loop
    cd examples && audit certify --arch pytorch_loop:factory \\
        --model ../build/pytorch-loop/weights.safetensors --teacher ../models/digits/teacher.pt \\
        --witness ../build/witness.json --data digits --split test --format json,md,html

The loss is the usual ELBO plus α times ``AlignmentLoss`` — the raw witness alignment that
``audit certify`` measures, with the witness settings chosen at design time (``witness.json``).
``CertificateMonitor`` gives the certificate's numbers every epoch. The weights are saved as
plain safetensors, which ``audit certify --arch pytorch_loop:factory`` loads into ``factory()``;
the per-epoch numbers go to ``weights.csv`` beside them, which the HTML report plots.

The other examples (``lightning_module.py``, ``diffusers_finetune.py``) reuse this file's data
loading, arguments and CSV writer.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from auditor import AlignmentLoss, CertificateMonitor, load_teacher, load_witness, open_dataset

LATENT_DIM = 16
ALIGN_WEIGHT = 10.0  # α: the alignment term's weight beside the ELBO
CSV_COLUMNS = ("epoch", "margin", "teacher_information", "alignment_loss", "active_units", "kl")


class SmallVAE(nn.Module):
    """An MLP VAE on 64-pixel digits: encode(x) → (μ, log σ²), decode(z) → Bernoulli logits."""

    likelihood = "bernoulli"  # lets audit certify's model diagnostics use the decoder

    def __init__(self, input_dim: int = 64, hidden: int = 128, latent_dim: int = LATENT_DIM):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, input_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def factory() -> SmallVAE:
    """What ``audit certify --arch pytorch_loop:factory`` builds before loading the weights."""
    return SmallVAE()


def elbo_terms(model: SmallVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction NLL, KL to N(0, I), μ, log σ²), the two losses as batch means of per-sample sums."""
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = F.binary_cross_entropy_with_logits(model.decode(z), x.flatten(1), reduction="none").sum(1).mean()
    kl = (0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(1).mean()
    return recon, kl, mu, logvar


def digits_with_teacher(teacher_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in digits' training split (N×64 in [0, 1]) and the teacher's probabilities on it (N×K)."""
    digits = open_dataset("digits", "train")
    x = torch.from_numpy(digits.read(0, digits.num_samples).copy())
    with torch.no_grad():
        p = load_teacher(teacher_path)(x).float()
    return x, p


def example_arguments(description: str, epochs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher.pt (e.g. models/digits/teacher.pt)")
    parser.add_argument("--witness", type=Path, required=True, help="witness.json from audit design --witness-out")
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights and the per-epoch CSV")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def write_epochs_csv(path: Path, rows: list[dict]) -> None:
    """The per-epoch numbers beside the weights (same stem, .csv): the HTML report plots them."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def train(teacher: Path, witness: Path, out: Path, epochs: int, seed: int) -> Path:
    torch.manual_seed(seed)
    w = load_witness(witness)
    x, p = digits_with_teacher(teacher)
    model = factory()
    align = AlignmentLoss(w.num_classes, LATENT_DIM, w.beta, w.offset)
    monitor = CertificateMonitor(w.num_classes, LATENT_DIM, w.beta, w.offset)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    rows = []
    for epoch in range(1, epochs + 1):
        kl_sum = 0.0
        for idx in torch.randperm(len(x)).split(128):
            recon, kl, mu, logvar = elbo_terms(model, x[idx])
            loss = recon + kl + ALIGN_WEIGHT * align(mu, p[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            monitor.update(mu, p[idx], logvar)  # detached inside: no effect on the gradients
            kl_sum += float(kl.detach()) * len(idx)
        numbers = monitor.compute()  # this epoch's certificate numbers; the monitor starts afresh
        rows.append({"epoch": epoch, **numbers, "kl": kl_sum / len(x)})
        print(f"epoch {epoch}: margin {numbers['margin']:.3f} of I_T {numbers['teacher_information']:.3f} nats")
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.safetensors"
    save_file(model.state_dict(), weights)
    write_epochs_csv(weights.with_suffix(".csv"), rows)
    return weights


if __name__ == "__main__":
    args = example_arguments("Train a small VAE with AlignmentLoss in a plain PyTorch loop.", epochs=12)
    print(f"wrote {train(args.teacher, args.witness, args.out, args.epochs, args.seed)}")
