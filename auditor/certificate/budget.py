"""How much memory an audit's certificate state may take, checked as soon as K and d are known.

The state is O(K² + d·K) float64 numbers whatever N is: the (K+1)² comoments of (p, CE) with the
temporaries of their update, merge and :meth:`~auditor.certificate.state.CertificateState.compute`,
the d×K witness matrix with its scaled copy and transpose, and each batch's temporaries, which
grow with the batch size B as well. :func:`state_bytes` is an upper estimate of all of it,
8·(10·(K+1)² + 6·d·K + 30·B·(K + d)) bytes at the default B = 512; ``benchmarks/bench_limits.py``
compares it with the peak memory of real states (0.27 to 0.55 of the estimate for K and d from 500
to 3000). A state over :data:`STATE_MEMORY_BUDGET` is refused before anything is allocated:
K = 100,000 classes would need about 1,200 GiB. With d = K the budget allows K up to 4911.
"""

from __future__ import annotations

from ..errors import AuditInputError

STATE_MEMORY_BUDGET = 4 << 30
BATCH_SIZE = 512  # the audit's default batch size: the per-batch temporaries are counted at it


def state_bytes(num_classes: int, latent_dim: int, batch_size: int = BATCH_SIZE) -> int:
    """Upper estimate of the bytes a certificate state for K classes and d latents takes."""
    K, d, B = num_classes, latent_dim, batch_size
    return 8 * (10 * (K + 1) ** 2 + 6 * d * K + 30 * B * (K + d))


def check_state_budget(num_classes: int, latent_dim: int) -> None:
    needed = state_bytes(num_classes, latent_dim)
    if needed > STATE_MEMORY_BUDGET:
        raise AuditInputError(
            f"K={num_classes} classes and d={latent_dim} latent dimensions need about {needed / 2**30:.1f} GiB for the "
            f"certificate state, more than its {STATE_MEMORY_BUDGET / 2**30:.0f} GiB budget "
            "(the state grows as K² + d·K; with d = K, K can be at most 4911)"
        )
