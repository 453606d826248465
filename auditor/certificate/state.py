"""The certificate's streaming state: what one pass accumulates, and how two states merge.

Everything in docs/mathematics.md is a function of sums over samples. The state keeps them in float64 —
O(K² + d) numbers whatever N is — as plain sums, min/max extremes, and centred moments (merged
with Chan's exact update rather than raw sums of squares, which lose small variances). That one
contract serves a single pass, a sharded pass, torch.distributed all-reduce and a training
loop's per-epoch monitor alike.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..compiled import pays_off
from ..errors import AuditInputError
from . import elementwise
from .numbers import PATH_PROB_FLOOR, PATH_TS, CertificateNumbers, numbers_from_state
from .witness import WitnessSpec

PROB_SUM_TOLERANCE = 1e-4  # teacher rows are float32 softmaxes; allow their rounding, not mistakes
# An update applies at most this many K-vectors per pass, so that its temporaries (reused
# buffers: Scratch) hold O(K · pass rows) numbers, 2 MiB each, whatever the caller's batch. It
# costs nothing in speed: 4096-row updates at K = 200 took 1.05 CPU s per 100,000 rows in one
# pass, 0.95 in passes of 2¹⁸ entries, 1.07 of 2¹⁷ (K = 100: 0.51, 0.49, 0.51; one thread).
UPDATE_PASS_ENTRIES = 1 << 18
GRAM_THROUGH_NUMPY_FROM = 32  # columns (K + 1) from which gram() goes through numpy's BLAS
_LOG_PATH_FLOOR = math.log(PATH_PROB_FLOOR)


def _count(n: int, device: torch.device) -> torch.Tensor:
    # torch.full, not torch.tensor: no host-to-device copy, so no synchronisation on CUDA.
    return torch.full((), float(n), dtype=torch.float64, device=device)


def nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (its slices along dim 0) holding NaN or ±inf, as an int64 device scalar.

    x − x is 0 for every finite value and NaN otherwise, so a row sums to NaN exactly when it
    holds a non-finite value (a plain row sum could overflow on huge finite values): two
    streaming kernels, several times faster on a CPU than ``isfinite(x).all(dim=1)``. On a CPU,
    where looking at a result stalls no device, a finite sum of the whole batch proves every value
    finite first, in one pass without a temporary; only a non-finite sum (a bad value, or an
    overflow) leads to the count. Integer inputs (uint8 images) cannot hold either: no pass.
    """
    if not x.dtype.is_floating_point:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    if x.device.type == "cpu":
        total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        if bool(torch.isfinite(total)):
            return torch.zeros((), dtype=torch.int64)
    return (x - x).reshape(x.shape[0], -1).sum(dim=1).isnan().sum()


def gram(rows: torch.Tensor) -> torch.Tensor:
    """rowsᵀ·rows for a B×C float64 matrix.

    On a CPU through numpy, whose BLAS computes a matrix times its own transpose as a symmetric
    rank-k update (dsyrk, half the flops of a product): for the 1025×201 rows of a 1024-row pass
    at K = 200 it took 1.1 ms where torch's float64 product took 4.0 ms (2-core AMD EPYC, one
    thread; torch's MKL runs generic kernels there). On one thread: a product this small gains
    nothing from more, and OpenBLAS's threads cost it 24 ms of CPU on a busy 2-core machine, on
    the core the forward passes need. Below GRAM_THROUGH_NUMPY_FROM columns torch's product is
    the cheaper: the round trip to numpy costs more than the product.
    """
    if rows.device.type != "cpu" or rows.shape[1] < GRAM_THROUGH_NUMPY_FROM:
        return rows.T @ rows
    matrix = rows.numpy()
    with _ONE_BLAS_THREAD, _blas().limit(limits=1, user_api="blas"):
        return torch.from_numpy(matrix.T @ matrix)


# The thread limit is process-wide: one product at a time sets and restores it.
_ONE_BLAS_THREAD = threading.Lock()


@functools.cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class Scratch:
    """Buffers that the update's passes reuse for their batch-sized temporaries.

    A pass makes about twenty B×K float64 temporaries. Freed, glibc gives their memory back to
    the system and the next pass faults it in again: in the update worker's thread at K = 200,
    60,000 to 190,000 page faults per 32,768 rows, 0.4 to 1 CPU second per 100,000 rows of an
    update that otherwise takes 1.1. Reused, none. They hold O(K · pass rows) numbers, whatever N.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """A rows × cols float64 tensor (contents undefined), the same memory on every call."""
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != cols:
            buffer = self.buffers[name] = torch.empty((rows, cols), dtype=torch.float64, device=self.device)
        return buffer[:rows]

    def as_float64(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the device in float64: itself when it is already, else a copy in a reused buffer."""
        if x.dtype == torch.float64 and x.device == self.device:
            return x
        return self.take(name, x.shape[0], x.shape[1]).copy_(x)


@dataclass
class StateField:
    reduce: str  # "sum" | "min" | "max"
    value: torch.Tensor


class Moments:
    """Count, mean and centred second moments of row vectors, merged exactly (Chan et al., 1979).

    Raw sums of squares lose every digit of a small variance to cancellation; centred moments
    merged with Chan's update keep them, and stay a fixed-size, mergeable state.
    """

    def __init__(self, size: int, full: bool, device: torch.device):
        self.full = full
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(size, dtype=torch.float64, device=device)
        self.m2 = torch.zeros((size, size) if full else (size,), dtype=torch.float64, device=device)

    def _merge(self, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor, nonempty: bool = False) -> None:
        """Chan's update; ``nonempty`` (a batch of at least one row) skips the guards for n = 0,
        a dozen scalar operations per batch whose per-call cost is most of a small batch's."""
        n = self.n + n_b
        delta = mean_b - self.mean
        if nonempty:
            weight, share = self.n * n_b / n, n_b / n
        else:
            weight = torch.where(n > 0, self.n * n_b / n.clamp(min=1), torch.zeros_like(n))
            share = torch.where(n > 0, n_b / n.clamp(min=1), torch.zeros_like(n))
        self.m2 = self.m2 + m2_b + weight * (torch.outer(delta, delta) if self.full else delta * delta)
        self.mean = self.mean + delta * share
        self.n = n

    def add_batch(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Add a batch of ``n_b`` ≥ 1 rows given by its own mean and centred second moments."""
        self._merge(_count(n_b, self.n.device), mean_b, m2_b, nonempty=True)

    def update(self, rows: torch.Tensor, buffer: torch.Tensor | None = None) -> None:
        """Add a batch of row vectors (B × size, B ≥ 1); ``buffer``, (B + 1) × size float64, holds
        the centred rows (a new tensor when None)."""
        B = rows.shape[0]
        if buffer is None:
            buffer = torch.empty((B + 1, rows.shape[1]), dtype=rows.dtype, device=rows.device)
        mean_b = rows.mean(dim=0)
        centred = torch.sub(rows, mean_b, out=buffer[:B])
        if not self.full:
            self.add_batch(B, mean_b, torch.linalg.vecdot(centred, centred, dim=0))
            return
        # Full moments: Chan's merge term √(n_a n_b / n)·δ as one more row, so that one Gram
        # matrix gives m2_b + (n_a n_b / n)·δδᵀ; added to a new tensor (the state's tensors are
        # replaced, never written into: the pass rolls back by keeping them).
        n_a = self.n
        n = n_a + B
        delta = mean_b - self.mean
        torch.mul(delta, (n_a * B / n).sqrt(), out=buffer[B])
        self.m2 = self.m2 + gram(buffer[: B + 1])
        self.mean = self.mean + delta * (B / n)
        self.n = n

    def merge(self, other: Moments) -> None:
        self._merge(other.n.to(self.n.device), other.mean.to(self.n.device), other.m2.to(self.n.device))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}


class CertificateState:
    """Mergeable float64 state from which Ĝ, I_T, L, the LCB, the view gap and diagnostics follow.

    ``update`` takes a batch of latent means (B×d), teacher probabilities (B×K), optionally the
    log-variances (B×d) and the teacher's probabilities on the encoder's own view (B×K).
    ``update`` never synchronises with the host: input problems (non-finite values, rows that
    are not probability vectors) are counted in the state and raised by :meth:`compute`.
    """

    def __init__(self, spec: WitnessSpec, with_view: bool = False, device: str | torch.device = "cpu"):
        self.spec = spec
        self.with_view = with_view
        self.device = torch.device(device)
        K, d = spec.num_classes, spec.latent_dim
        # Constants of update(), made once: the witness's Helmert weights (see _witness_logits),
        # the path's t values, and how many rows one pass of an update takes.
        self._j = torch.arange(1, K, dtype=torch.float64, device=self.device)  # j = 1 … K−1
        self._unit_helmert = math.sqrt(K / (K - 1)) / torch.sqrt(self._j * (self._j + 1))
        self._helmert = spec.beta * self._unit_helmert
        self._path_t = torch.tensor(PATH_TS, dtype=torch.float64, device=self.device)
        self._pass_rows = max(64, UPDATE_PASS_ENTRIES // (K + 1))
        # on a CPU at large K, the update's compiled loops (update_kernels); else torch operations
        self._compiled_loops = self.device.type == "cpu" and pays_off(K)
        self._scratch = Scratch(self.device)
        zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=self.device)  # noqa: E731
        full = lambda v, *shape: torch.full(shape, v, dtype=torch.float64, device=self.device)  # noqa: E731
        # (p_i, CE_i) jointly: p̄, mean CE and every covariance the LCB's influence variance needs.
        self.p_ce = Moments(K + 1, full=True, device=self.device)
        self.mu = Moments(d, full=False, device=self.device)
        self.fields: dict[str, StateField] = {
            "sum_h": StateField("sum", zeros()),
            "sum_agree": StateField("sum", zeros()),
            "sum_escape": StateField("sum", zeros()),
            "min_mu": StateField("min", full(math.inf, d)),
            "max_mu": StateField("max", full(-math.inf, d)),
            "n_logvar": StateField("sum", zeros()),
            "sum_prior_kl": StateField("sum", zeros(d)),
            # per teacher class (argmax p): count, Σ max p, Σ agreement, Σ KL(p‖q), Σ q_k
            "class_stats": StateField("sum", zeros(5, K)),
            # input problems, raised at compute(): rows with non-finite μ / log σ², bad p / p′ rows
            "bad_mu": StateField("sum", zeros()),
            "bad_logvar": StateField("sum", zeros()),
            "bad_p": StateField("sum", zeros()),
            "bad_p_view": StateField("sum", zeros()),
            # margin–energy path, with p̃ = max(p, PATH_PROB_FLOOR): Σ‖ℓ(p̃_i)‖², and for each t in
            # PATH_TS Σ_i CE(p_i, q_t) where q_t = softmax(t·ℓ(p̃_i)) is the witness on t·μ*(p̃_i)
            "sum_sq_centered_log": StateField("sum", zeros()),
            "path_ce": StateField("sum", zeros(len(PATH_TS))),
        }
        if with_view:
            self.fields.update(
                {
                    "sum_p_view": StateField("sum", zeros(K)),
                    "sum_ce_view": StateField("sum", zeros()),
                    "sum_tv_range": StateField("sum", zeros()),
                    "sum_tv": StateField("sum", zeros()),
                    "sum_kl_view": StateField("sum", zeros()),
                }
            )

    # ------------------------------------------------------------------ accumulation
    def _add(self, name: str, value: torch.Tensor) -> None:
        slot = self.fields[name]
        if slot.reduce == "sum":
            slot.value = slot.value + value
        elif slot.reduce == "min":
            slot.value = torch.minimum(slot.value, value)
        else:
            slot.value = torch.maximum(slot.value, value)

    @staticmethod
    def _count_bad_prob_rows(minima: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
        """Rows that are not probability vectors (negative, NaN/inf, or not summing to 1 within the
        tolerance), from each row's least entry and sum: NaN fails both comparisons, ±inf the sum's."""
        ok = (minima >= 0) & ((sums - 1).abs() <= PROB_SUM_TOLERANCE)
        return (~ok).sum().to(torch.float64)

    def _witness_logits(self, mu: torch.Tensor) -> torch.Tensor:
        """z = β Sᵀμ for every row, B×K, from the structure of S instead of a dense product.

        S holds sqrt(K/(K−1))·H (docs/mathematics.md), whose column k (1-based) has 1/√(j(j+1)) in
        rows j ≥ k and −(k−1)/√((k−1)k) in row k−1, so with g_j = μ_(offset+j−1)/√(j(j+1)) and
        G_k = Σ_{j≤k} g_j: z_k = β sqrt(K/(K−1))·(G_(K−1) − G_(k−1) − (k−1) g_(k−1)). One cumsum:
        about 4·B·K operations instead of the product's 2·B·K·(K−1); within 1.3e-14 of the exact
        logits where the dense float64 product was within 2.0e-14 (K = 200, |μ| ~ 1.5).
        """
        K, offset, n = self.spec.num_classes, self.spec.offset, mu.shape[0]
        g = torch.mul(mu[:, offset : offset + K - 1], self._helmert, out=self._scratch.take("g", n, K - 1))
        prefix = torch.cumsum(g, dim=1, out=self._scratch.take("prefix", n, K - 1))  # G_1 … G_(K−1)
        z = self._scratch.take("z", n, K)
        z[:, 0] = prefix[:, -1]
        middle = torch.addcmul(prefix[:, :-1], g[:, :-1], self._j[:-1], out=z[:, 1 : K - 1])  # k = 2 … K−1
        torch.sub(prefix[:, -1:], middle, out=middle)  # G_(K−1) − (G_(k−1) + (k−1) g_(k−1))
        torch.mul(g[:, K - 2], -(K - 1), out=z[:, K - 1])
        return z

    def _escape_norms(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """‖S (q_i − p_i)‖ per row (β is applied by the caller). With x = q − p, S x has the Helmert entries
        sqrt(K/(K−1))·(Σ_{m≤j} x_m − j·x_(j+1))/√(j(j+1)), j = 1 … K−1: one prefix cumsum instead
        of a dense product, the same terms as the product sums (no (Σx)² cancellation)."""
        n, K = q.shape
        x = torch.sub(q, p, out=self._scratch.take("x", n, K))
        helmert = torch.cumsum(x, dim=1, out=self._scratch.take("cumsum_x", n, K))[:, :-1]
        helmert.sub_(x[:, 1:].mul_(self._j)).mul_(self._unit_helmert)
        return torch.linalg.vector_norm(helmert, dim=1)

    @torch.no_grad()
    def update(
        self,
        mu: torch.Tensor,
        p: torch.Tensor,
        logvar: torch.Tensor | None = None,
        p_view: torch.Tensor | None = None,
    ) -> None:
        K, d = self.spec.num_classes, self.spec.latent_dim
        if mu.ndim != 2 or mu.shape[1] != d:
            raise AuditInputError(f"latent means have shape {tuple(mu.shape)}, expected (batch, {d})")
        if p.ndim != 2 or p.shape != (mu.shape[0], K):
            raise AuditInputError(f"teacher probabilities have shape {tuple(p.shape)}, expected ({mu.shape[0]}, {K})")
        if self.with_view and p_view is None:
            raise AuditInputError("the view gap needs the teacher's probabilities on the encoder's view")
        if logvar is not None and logvar.shape != mu.shape:
            raise AuditInputError(f"log-variances have shape {tuple(logvar.shape)}, expected {tuple(mu.shape)}")
        if p_view is not None and self.with_view and p_view.shape != p.shape:
            raise AuditInputError(
                f"encoder-view probabilities have shape {tuple(p_view.shape)}, expected {tuple(p.shape)}"
            )
        # A large update is applied in passes of at most UPDATE_PASS_ENTRIES / (K + 1) rows (Chan's
        # merge makes the split exact up to rounding): the temporaries stay O(K · pass rows).
        step = self._pass_rows
        for begin in range(0, mu.shape[0], step):
            rows = slice(begin, begin + step)
            self._update_rows(
                mu[rows],
                p[rows],
                None if logvar is None else logvar[rows],
                p_view[rows] if self.with_view and p_view is not None else None,
            )

    def _update_rows(
        self, mu: torch.Tensor, p: torch.Tensor, logvar: torch.Tensor | None, p_view: torch.Tensor | None
    ) -> None:
        # Rows stay rows (B×K, as the teacher gives them): every per-sample quantity is a
        # reduction along a contiguous row of K values. At K = 200 that measured faster than the
        # K×B column layout for every reduction (argmax 0.2 vs 0.5 ms per 1024 rows, cumsum 0.15
        # vs 1.1 ms) and saves the transposing copy; at K = 10 the whole update costs about the same.
        # The B×K temporaries live in reused buffers (Scratch), and are written in place.
        f64 = torch.float64
        mu = self._scratch.as_float64("mu", mu.detach())
        p = self._scratch.as_float64("p", p.detach())
        n = p.shape[0]
        self._add("bad_mu", nonfinite_rows(mu).to(f64))
        if logvar is not None:
            logvar = self._scratch.as_float64("logvar", logvar.detach())
            self._add("bad_logvar", nonfinite_rows(logvar).to(f64))
            self._add("n_logvar", _count(n, self.device))
        if self._compiled_loops:
            mu, p = mu.contiguous(), p.contiguous()
            logq, sum_h, z_range = self._add_row_numbers_fused(mu, p)
            self._add_column_numbers_fused(mu, None if logvar is None else logvar.contiguous())
        else:
            logq, sum_h, z_range = self._add_row_numbers(mu, p)
            self._add_column_numbers(mu, logvar)

        if p_view is not None:
            pv = p_view.detach().to(self.device, f64)
            self._add("bad_p_view", self._count_bad_prob_rows(pv.amin(dim=1), pv.sum(dim=1)))
            tv = 0.5 * (p - pv).abs().sum(dim=1)
            self._add("sum_p_view", pv.sum(dim=0))
            self._add("sum_ce_view", -torch.linalg.vecdot(pv.reshape(-1), logq.reshape(-1)))
            self._add("sum_tv_range", (tv * z_range()).sum())
            self._add("sum_tv", tv.sum())
            self._add("sum_kl_view", -sum_h - torch.where(p > 0, p * pv.log(), 0.0).sum())

    def _add_column_numbers(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> None:
        """Add what follows from each latent dimension to the state, as torch operations (on a
        device, or a CPU at small K): μ's moments, least and largest values, and the prior KL's sums."""
        take = self._scratch.take
        n, d = mu.shape
        self.mu.update(mu, take("mu_centred", n + 1, d))
        self._add("min_mu", mu.amin(dim=0))
        self._add("max_mu", mu.amax(dim=0))
        if logvar is not None:
            # KL(N(μ, σ²) ‖ N(0, 1)) per dimension: ½(μ² + (σ² − 1 − log σ²)), with σ² − 1 as
            # expm1: exact near σ² = 1, where a collapsed dimension's KL is a sum of tiny terms
            kl = elementwise.expm1(logvar, out=take("prior_kl", n, d))
            kl.sub_(logvar).addcmul_(mu, mu)
            self._add("sum_prior_kl", 0.5 * kl.sum(dim=0))

    def _add_column_numbers_fused(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> None:
        """:meth:`_add_column_numbers` on a CPU, in the compiled loops of :mod:`.update_kernels`."""
        from . import update_kernels as kernels

        n, d = mu.shape
        rows = mu.numpy()
        deviations, lows, highs = np.zeros(d), np.full(d, math.inf), np.full(d, -math.inf)
        kernels.column_statistics(rows, deviations, lows, highs)
        mean = rows[0] + deviations / n
        m2 = np.zeros(d)
        kernels.centred_squares(rows, mean, m2)
        self.mu.add_batch(n, torch.from_numpy(mean), torch.from_numpy(m2))
        self._add("min_mu", torch.from_numpy(lows))
        self._add("max_mu", torch.from_numpy(highs))
        if logvar is not None:
            expm1 = elementwise.expm1(logvar, out=self._scratch.take("prior_kl", n, d))
            kl = np.zeros(d)
            kernels.prior_kl_sums(rows, logvar.numpy(), expm1.numpy(), kl)
            self._add("sum_prior_kl", 0.5 * torch.from_numpy(kl))

    def _add_row_numbers(
        self, mu: torch.Tensor, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Callable[[], torch.Tensor]]:
        """Add what follows from each row's μ and p to the state, as torch operations (on a
        device, or a CPU at small K); the same numbers as :meth:`_add_row_numbers_fused`.
        Returns log q (B×K), Σ H and a function giving each row's logit range, for the view gap."""
        f64, take = torch.float64, self._scratch.take
        n, K = p.shape
        p_sums = p.sum(dim=1)
        self._add("bad_p", self._count_bad_prob_rows(p.amin(dim=1), p_sums))
        z = self._witness_logits(mu)
        z_max = z.amax(dim=1, keepdim=True)
        shifted = torch.sub(z, z_max, out=take("logq", n, K))
        expz = elementwise.exp(shifted, out=take("q", n, K))
        norm = expz.sum(dim=1, keepdim=True)
        q = expz.div_(norm)
        logq = shifted.sub_(norm.log())  # log_softmax, by its definition
        ce = -torch.linalg.vecdot(p, logq, dim=1)
        logp = elementwise.log(p, out=take("logp", n, K))
        # H = −Σ xlogy(p, p): 0·log 0 is NaN here and 0 by definition, so NaNs are left out of the
        # sum; a NaN from a bad row (p < 0, NaN) is left out too, but compute() refuses every such
        # row (bad_p) before any number is used.
        h = -torch.nansum(torch.mul(p, logp, out=take("plogp", n, K)), dim=1)
        # the first index on ties, as numpy's argmax
        teacher_class = elementwise.row_argmax(p)
        p_max = p.gather(1, teacher_class[:, None])[:, 0]
        agree = (elementwise.row_argmax(q) == teacher_class).to(f64)

        p_ce = take("p_ce", n, K + 1)
        p_ce[:, :K] = p
        p_ce[:, K] = ce
        self.p_ce.update(p_ce, take("p_ce_centred", n + 1, K + 1))
        sum_h = h.sum()
        self._add("sum_h", sum_h)
        self._add("sum_agree", agree.sum())
        # ‖β S (q_i − p_i)‖ = β‖S (q_i − p_i)‖: β applied after the norm, whose terms are then at
        # most 4 and cannot overflow when β is huge.
        self._add("sum_escape", self.spec.beta * self._escape_norms(q, p).sum())
        # per teacher class: index_add over the class of each row (the state is replaced, not written into)
        per_sample = torch.stack([torch.ones_like(ce), p_max, agree, ce - h, q.gather(1, teacher_class[:, None])[:, 0]])
        slot = self.fields["class_stats"]
        slot.value = slot.value.index_add(1, teacher_class, per_sample)
        self._update_path(p, p_sums, logp)  # last: it turns logp into the centred log in place
        return logq, sum_h, lambda: z_max[:, 0] - z.amin(dim=1)

    def _add_row_numbers_fused(
        self, mu: torch.Tensor, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Callable[[], torch.Tensor]]:
        """:meth:`_add_row_numbers` on a CPU, in the compiled loops of :mod:`.update_kernels`: each
        row is read while it is in the core's cache, instead of once per torch operation."""
        from . import update_kernels as kernels  # numba's import and the cached loops: on first use only

        take = self._scratch.take
        n, K = p.shape
        shifted = take("logq", n, K)
        kernels.witness_logits_shifted(mu.numpy(), self.spec.offset, self._helmert.numpy(), shifted.numpy())
        exp_shifted = elementwise.exp(shifted, out=take("q", n, K))
        log_p = elementwise.log(p, out=take("logp", n, K))
        p_ce, step = take("p_ce", n, K + 1), take("step", n, K)
        rows = take("rows", n, kernels.ROW_RESULTS)
        class_sums = np.zeros((kernels.CLASS_SUMS, K))
        kernels.row_statistics(
            p.numpy(),
            log_p.numpy(),
            shifted.numpy(),  # becomes log q
            exp_shifted.numpy(),
            self._unit_helmert.numpy(),
            _LOG_PATH_FLOOR,
            PATH_TS[1],
            p_ce.numpy(),
            step.numpy(),
            rows.numpy(),
            class_sums,
        )
        log_sums = take("log_power_sums", n, len(PATH_TS) - 1)
        kernels.power_sums(elementwise.exp(step, out=step).numpy(), log_sums.numpy())
        elementwise.log(log_sums, out=log_sums)

        self._add("bad_p", self._count_bad_prob_rows(rows[:, kernels.P_MIN], rows[:, kernels.P_SUM]))
        self.p_ce.update(p_ce, take("p_ce_centred", n + 1, K + 1))
        sum_h = rows[:, kernels.ENTROPY].sum()
        self._add("sum_h", sum_h)
        class_stats = torch.from_numpy(class_sums)
        self._add("sum_agree", class_stats[2].sum())  # its rows: count, Σ max p, Σ agreement, …
        self._add("sum_escape", self.spec.beta * rows[:, kernels.ESCAPE].sum())
        slot = self.fields["class_stats"]
        slot.value = slot.value + class_stats
        p_sums = rows[:, kernels.P_SUM]
        self._add("sum_sq_centered_log", rows[:, kernels.SQ_CENTRED_LOG].sum())
        lse_dot = torch.cat([(math.log(K) * p_sums.sum())[None], log_sums.T @ p_sums])
        self._add("path_ce", lse_dot - self._path_t * rows[:, kernels.P_DOT_CENTRED_LOG].sum())
        return shifted, sum_h, lambda: rows[:, kernels.Z_RANGE]

    def _update_path(self, p: torch.Tensor, p_sums: torch.Tensor, logp: torch.Tensor) -> None:
        """Σ‖ℓ(p̃)‖² and Σ_i CE(p_i, softmax(t·ℓ(p̃_i))) for every t at once (p̃ = max(p, floor)).

        log p̃ = max(log p, log floor) (log is increasing), so ``logp`` serves (and is overwritten
        with ℓ); a row with p < 0 gives NaN here, and compute() refuses it (bad_p). CE_t =
        Σ_k p_k (lse_t − t·ℓ_k) with lse_t = log Σ_k exp(t·ℓ_k). The t are 0, Δ, 2Δ, …, so
        exp(jΔ·ℓ) is the j-th power of exp(Δ·ℓ): one exp and repeated products instead of an exp
        per t (rounding grows by at most j ulps), each power summed as it is formed. No max-shift
        is needed: ℓ lies in [log floor, −log floor] ≈ [−28, 28] and t in [0, 1], so nothing overflows.
        """
        n, K = p.shape
        centred = logp.clamp_(min=_LOG_PATH_FLOOR)
        centred.sub_(centred.mean(dim=1, keepdim=True))
        flat = centred.reshape(-1)
        self._add("sum_sq_centered_log", torch.linalg.vecdot(flat, flat))
        step = torch.mul(centred, PATH_TS[1], out=self._scratch.take("step", n, K))
        elementwise.exp(step, out=step)
        lse = torch.empty((len(PATH_TS), n), dtype=p.dtype, device=p.device)
        lse[0] = math.log(K)  # t = 0: log K
        torch.sum(step, dim=1, out=lse[1])
        power = self._scratch.take("power", n, K).copy_(step)
        for j in range(2, len(PATH_TS)):  # power = exp(jΔ·ℓ)
            torch.sum(power.mul_(step), dim=1, out=lse[j])
        lse[1:].log_()
        self._add("path_ce", lse @ p_sums - self._path_t * torch.linalg.vecdot(p.reshape(-1), flat))

    # ------------------------------------------------------------------ merging
    def merge_state(self, other: CertificateState) -> None:
        if other.spec != self.spec or other.with_view != self.with_view:
            raise ValueError("cannot merge certificate states of different witnesses or views")
        self.p_ce.merge(other.p_ce)
        self.mu.merge(other.mu)
        for name, slot in other.fields.items():
            self._add(name, slot.value.to(self.device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        values = {f"p_ce.{k}": v for k, v in self.p_ce.tensors().items()}
        values.update({f"mu.{k}": v for k, v in self.mu.tensors().items()})
        values.update({name: slot.value for name, slot in self.fields.items()})
        return {k: v.detach().clone() for k, v in values.items()}

    def load_state_dict(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            value = value.to(self.device, torch.float64).clone()
            group, _, part = key.partition(".")
            if part:
                setattr(getattr(self, group), part, value)
            else:
                self.fields[key].value = value

    def all_reduce(self, group=None) -> None:
        """Combine this state across torch.distributed ranks.

        Each rank's state is gathered (it is small: O(K² + d)) and folded in rank order with
        :meth:`merge_state`, so every rank ends with the same numbers as one process would have.
        """
        import torch.distributed as dist

        own = self.state_dict()
        flat = torch.cat([v.reshape(-1) for v in own.values()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, flat, group=group)
        merged = CertificateState(self.spec, self.with_view, self.device)
        for rank_flat in gathered:
            part, offset = CertificateState(self.spec, self.with_view, self.device), 0
            values = {}
            for key, value in own.items():
                values[key] = rank_flat[offset : offset + value.numel()].reshape(value.shape)
                offset += value.numel()
            part.load_state_dict(values)
            merged.merge_state(part)
        self.load_state_dict(merged.state_dict())

    def reset(self) -> None:
        type(self).__init__(self, self.spec, self.with_view, self.device)

    # ------------------------------------------------------------------ results
    def compute(self) -> CertificateNumbers:
        """The numbers of docs/mathematics.md from the state (raises AuditInputError for bad inputs seen)."""
        v = {name: value.cpu().numpy().astype(np.float64) for name, value in self.state_dict().items()}
        _raise_for_bad_inputs(v, self.with_view)
        return numbers_from_state(v, self.spec, self.with_view)


def _raise_for_bad_inputs(v: dict[str, np.ndarray], with_view: bool) -> None:
    n = int(v["p_ce.n"])
    if n == 0:
        raise AuditInputError("the audit set is empty: no samples were read")
    if v["bad_mu"] > 0:
        raise AuditInputError(f"latent means contain NaN or inf in {int(v['bad_mu'])} of {n} samples")
    if v["bad_logvar"] > 0:
        raise AuditInputError(f"log-variances contain NaN or inf in {int(v['bad_logvar'])} of {n} samples")
    for key, what in (("bad_p", "teacher probabilities"), ("bad_p_view", "encoder-view teacher probabilities")):
        if v[key] > 0:
            raise AuditInputError(
                f"{what} are not probability vectors in {int(v[key])} of {n} rows "
                f"(negative, NaN/inf, or not summing to 1 within {PROB_SUM_TOLERANCE})"
            )
