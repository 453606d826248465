"""A PyTorch Lightning callback that logs the certificate every training epoch.

Import this module only where ``lightning`` (or the older ``pytorch_lightning``) is installed;
nothing else in vae-audit imports it. The LightningModule's ``training_step`` returns a dict with
the batch's latent means and teacher probabilities besides the loss::

    return {"loss": loss, "mu": mu, "teacher_probs": p, "logvar": logvar}   # logvar optional

(or pass ``extract=`` to take them from another output). At the end of each training epoch the
callback logs ``audit/margin``, ``audit/teacher_information``, ``audit/alignment_loss``,
``audit/escape_force`` and ``audit/active_units``, computed by :class:`CertificateMonitor`.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    import lightning.pytorch as pl
except ImportError:  # the pre-2.0 package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]  # the same API under its old name
    except ImportError as exc:
        raise ImportError("auditor.lightning_callback needs PyTorch Lightning: pip install lightning") from exc

from .monitor import CertificateMonitor

LOGGED = ("margin", "teacher_information", "alignment_loss", "escape_force", "active_units")


def outputs_from_step(outputs, batch):
    """(mu, teacher_probs, logvar or None) from the dict that ``training_step`` returned."""
    if not isinstance(outputs, dict) or "mu" not in outputs or "teacher_probs" not in outputs:
        raise ValueError(
            "CertificateCallback: training_step must return a dict with 'mu' and 'teacher_probs' "
            "(and optionally 'logvar'), or pass extract="
        )
    return outputs["mu"], outputs["teacher_probs"], outputs.get("logvar")


class CertificateCallback(pl.Callback):
    def __init__(
        self,
        num_classes: int,
        latent_dim: int,
        beta: float,
        offset: int = 0,
        prefix: str = "audit/",
        extract: Callable = outputs_from_step,
    ):
        super().__init__()
        self.witness = (num_classes, latent_dim, beta, offset)
        self.prefix = prefix
        self.extract = extract
        self.monitor: CertificateMonitor | None = None
        self.last: dict[str, float] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # On the module's device, so that updates never wait on the host and DDP can all-reduce.
        self.monitor = CertificateMonitor(*self.witness, device=pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        mu, teacher_probs, logvar = self.extract(outputs, batch)
        assert self.monitor is not None  # Lightning starts the epoch (on_train_epoch_start) first
        self.monitor.update(mu, teacher_probs, logvar)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        assert self.monitor is not None  # made in on_train_epoch_start
        self.last = self.monitor.compute()  # already combined across ranks
        pl_module.log_dict({self.prefix + key: float(self.last[key]) for key in LOGGED}, sync_dist=False)
