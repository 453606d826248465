"""The same small VAE trained by PyTorch Lightning, with AlignmentLoss and CertificateCallback.

Run from the repository root, after ``audit design … --witness-out build/witness.json`` (see
``pytorch_loop.py``)::

    python examples/lightning_module.py --teacher models/digits/teacher.pt \\
        --witness build/witness.json --out build/lightning
    cd examples && audit certify --arch lightning_module:factory \\
        --model ../build/lightning/weights.safetensors --teacher ../models/digits/teacher.pt \\
        --witness ../build/witness.json --data digits --split test

``training_step`` returns the batch's latent means and teacher probabilities beside the loss, and
``CertificateCallback`` logs ``audit/margin`` and the other certificate numbers every epoch. The
``AlignmentLoss`` is a submodule, so Lightning moves it to the model's device; its witness matrix
is a buffer that no state dict holds, so the saved weights are the VAE's alone.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from pytorch_loop import ALIGN_WEIGHT, LATENT_DIM, SmallVAE, digits_with_teacher, elbo_terms, example_arguments
from safetensors.torch import save_file

from auditor import AlignmentLoss, load_witness
from auditor.training.lightning import CertificateCallback


class AlignedVAE(pl.LightningModule):
    def __init__(self, num_classes: int, beta: float, offset: int = 0):
        super().__init__()
        self.vae = SmallVAE()
        self.align = AlignmentLoss(num_classes, LATENT_DIM, beta, offset)

    def training_step(self, batch, batch_idx):
        x, p = batch
        recon, kl, mu, logvar = elbo_terms(self.vae, x)
        loss = recon + kl + ALIGN_WEIGHT * self.align(mu, p)
        return {"loss": loss, "mu": mu, "teacher_probs": p, "logvar": logvar}  # what the callback reads

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def factory() -> SmallVAE:
    """What ``audit certify --arch lightning_module:factory`` builds before loading the weights."""
    return SmallVAE()


def train(teacher: Path, witness: Path, out: Path, epochs: int, seed: int) -> Path:
    pl.seed_everything(seed, verbose=False)
    w = load_witness(witness)
    x, p = digits_with_teacher(teacher)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, p), batch_size=128, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[CertificateCallback(w.num_classes, LATENT_DIM, w.beta, w.offset)],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    module = AlignedVAE(w.num_classes, w.beta, w.offset)
    trainer.fit(module, loader)
    print(f"last epoch: audit/margin {float(trainer.callback_metrics['audit/margin']):.3f} nats")
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.safetensors"
    save_file(module.vae.state_dict(), weights)
    return weights


if __name__ == "__main__":
    args = example_arguments("Train a small VAE with AlignmentLoss as a Lightning module.", epochs=12)
    print(f"wrote {train(args.teacher, args.witness, args.out, args.epochs, args.seed)}")
