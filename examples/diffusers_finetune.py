"""A diffusers ``AutoencoderKL`` fine-tuned with AlignmentLoss on its flattened latent means.

Run from the repository root, after ``audit design … --witness-out build/witness.json`` (see
``pytorch_loop.py``)::

    python examples/diffusers_finetune.py --teacher models/digits/teacher.pt \\
        --witness build/witness.json --out build/diffusers
    cd examples && audit certify --arch diffusers_finetune:factory \\
        --model ../build/diffusers/vae/diffusion_pytorch_model.safetensors \\
        --teacher ../models/digits/teacher.pt --witness ../build/witness.json --data digits --split test

A tiny AutoencoderKL built from a small config stands in for the pretrained one you would load
with ``AutoencoderKL.from_pretrained``: 8×8 digits, three blocks of 32 channels, 4 latent
channels at 2×2, so the flattened latent mean has d = 16. The fine-tune keeps diffusers' own
objective (reconstruction plus a small KL weight) and adds α·AlignmentLoss on
``latent_dist.mean.flatten(1)``. ``save_pretrained`` writes the model as diffusers does, and
``audit certify`` reads that weights file into ``factory()``: the AutoencoderKL seen through
:class:`LatentMeans`, which gives the audit the flattened means and log-variances.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from pytorch_loop import ALIGN_WEIGHT, LATENT_DIM, digits_with_teacher, example_arguments
from torch import nn

from auditor import AlignmentLoss, CertificateMonitor, load_witness

CONFIG = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,  # 4 channels × 2 × 2 = LATENT_DIM
    "norm_num_groups": 8,
    "sample_size": 8,
}
KL_WEIGHT = 1e-3  # diffusers' VAEs are trained with a small weight on the KL term


def images(x: torch.Tensor) -> torch.Tensor:
    """Flat digits in [0, 1] (as the audit feeds them) → 1×8×8 images in [−1, 1] (as diffusers expects)."""
    return x.reshape(-1, 1, 8, 8) * 2 - 1


class LatentMeans(nn.Module):
    """An AutoencoderKL as the audit reads it: ``encode(x)`` → flattened (μ, log σ²) of its latent_dist.

    Its state dict is the AutoencoderKL's own, so ``--model`` takes the file ``save_pretrained`` wrote.
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images(x)).latent_dist
        return posterior.mean.flatten(1), posterior.logvar.flatten(1)

    def state_dict(self, *args, **kwargs):
        return self.vae.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.vae.load_state_dict(state_dict, strict=strict, assign=assign)


def factory() -> LatentMeans:
    """What ``audit certify --arch diffusers_finetune:factory`` builds before loading the weights."""
    return LatentMeans(AutoencoderKL(**CONFIG))


def train(teacher: Path, witness: Path, out: Path, epochs: int, seed: int) -> Path:
    torch.manual_seed(seed)
    w = load_witness(witness)
    x, p = digits_with_teacher(teacher)
    vae = AutoencoderKL(**CONFIG)  # in your fine-tune: AutoencoderKL.from_pretrained(...)
    align = AlignmentLoss(w.num_classes, LATENT_DIM, w.beta, w.offset)
    monitor = CertificateMonitor(w.num_classes, LATENT_DIM, w.beta, w.offset)
    optimiser = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(x)).split(64):
            target = images(x[idx])
            posterior = vae.encode(target).latent_dist
            recon = ((vae.decode(posterior.sample()).sample - target) ** 2).mean()
            mu = posterior.mean.flatten(1)
            loss = recon + KL_WEIGHT * posterior.kl().mean() + ALIGN_WEIGHT * align(mu, p[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            monitor.update(mu, p[idx], posterior.logvar.flatten(1))
        numbers = monitor.compute()
        print(f"epoch {epoch}: margin {numbers['margin']:.3f} of I_T {numbers['teacher_information']:.3f} nats")
    vae.save_pretrained(out / "vae")
    return out / "vae" / "diffusion_pytorch_model.safetensors"


if __name__ == "__main__":
    args = example_arguments("Fine-tune a tiny diffusers AutoencoderKL with AlignmentLoss.", epochs=4)
    print(f"wrote {train(args.teacher, args.witness, args.out, args.epochs, args.seed)}")
