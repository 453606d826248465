"""The training-time monitor against plain numpy, its per-epoch reset, and the Lightning callback when
Lightning is installed (the README's example with it runs in tests/test_examples.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import AuditInputError
from auditor.training.monitor import CertificateMonitor

from . import reference as ref

ROOT = Path(__file__).resolve().parents[1]
K, D, BETA = 4, 6, 1.5


def epoch_data(seed: int, n: int = 90):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)), ref.softmax(rng.normal(size=(n, K)) * 2), rng.normal(size=(n, D)) * 0.3 - 1


def expected_numbers(mu, p, logvar):
    cert = ref.certificate(mu, p, K, BETA)
    S = ref.witness_S(K, D)
    escape = np.linalg.norm(BETA * (cert["q"] - p) @ S.T, axis=1).mean()
    diag = ref.diagnostics(mu, logvar)
    return {
        "margin": cert["margin"],
        "teacher_information": cert["teacher_information"],
        "alignment_loss": cert["alignment_loss"],
        "escape_force": escape,
        "active_units": diag["active_units"],
        "mean_sq_norm": diag["mean_sq_norm"],
        "mean_prior_kl": diag["mean_prior_kl"],
        "num_samples": len(mu),
    }


def test_each_epoch_matches_plain_numpy_and_resets():
    monitor = CertificateMonitor(num_classes=K, latent_dim=D, beta=BETA)
    for seed in (0, 1):  # two epochs with different data: the second must not see the first
        mu, p, logvar = epoch_data(seed)
        for idx in np.array_split(np.arange(len(mu)), 4):
            batch_mu = torch.tensor(mu[idx], dtype=torch.float64, requires_grad=True)  # as in training
            monitor.update(batch_mu, torch.tensor(p[idx]), torch.tensor(logvar[idx]))
        got = monitor.compute()
        for key, value in expected_numbers(mu, p, logvar).items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert got["margin"] == pytest.approx(got["teacher_information"] - got["alignment_loss"], abs=1e-12)


def test_compute_without_data_is_an_error_and_state_stays_usable():
    monitor = CertificateMonitor(num_classes=K, latent_dim=D, beta=BETA)
    with pytest.raises(AuditInputError, match="empty"):
        monitor.compute()
    mu, p, _ = epoch_data(3)
    monitor.update(torch.tensor(mu), torch.tensor(p))
    assert "mean_prior_kl" not in monitor.compute()


def _lightning():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return __import__(name, fromlist=["Trainer"])
        except ImportError:
            continue
    pytest.skip("PyTorch Lightning is not installed (pip install lightning)")


def test_lightning_callback_logs_the_certificate(tmp_path):
    pl = _lightning()
    from auditor.training.lightning import CertificateCallback

    mu_all, p_all, logvar_all = epoch_data(5, n=64)
    x = torch.tensor(mu_all, dtype=torch.float32)
    p = torch.tensor(p_all, dtype=torch.float32)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def training_step(self, batch, batch_idx):
            xb, pb = batch
            mu = xb * self.scale  # μ = x while scale stays 1 (lr = 0)
            return {"loss": (mu * 0).sum() + self.scale * 0, "mu": mu, "teacher_probs": pb}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, p), batch_size=16)
    callback = CertificateCallback(num_classes=K, latent_dim=D, beta=BETA)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Module(), loader)
    expected = ref.certificate(
        x.double().numpy(), p.double().numpy() / p.double().numpy().sum(1, keepdims=True), K, BETA
    )
    metrics = trainer.callback_metrics
    assert metrics["audit/margin"].item() == pytest.approx(expected["margin"], rel=1e-5)
    assert metrics["audit/teacher_information"].item() == pytest.approx(expected["teacher_information"], rel=1e-5)
    assert {"audit/escape_force", "audit/alignment_loss", "audit/active_units"} <= set(metrics)
    assert callback.last["num_samples"] == 64  # one epoch's samples, not two
