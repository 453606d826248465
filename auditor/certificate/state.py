"""The certificate's streaming state: what one pass accumulates, and how two states merge.

Everything in docs/mathematics.md is a function of sums over samples. The state keeps them in float64 —
O(K² + d) numbers whatever N is — as plain sums, min/max extremes, and centred moments (merged
with Chan's exact update rather than raw sums of squares, which lose small variances). That one
contract serves a single pass, a sharded pass, torch.distributed all-reduce and a training
loop's per-epoch monitor alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AuditInputError
from .numbers import PATH_PROB_FLOOR, PATH_TS, CertificateNumbers, numbers_from_state
from .witness import WitnessSpec, witness_matrix

PROB_SUM_TOLERANCE = 1e-4  # teacher rows are float32 softmaxes; allow their rounding, not mistakes


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

    def update(self, rows: torch.Tensor) -> None:
        mean_b = rows.mean(dim=0)
        centred = rows - mean_b
        m2_b = centred.T @ centred if self.full else (centred * centred).sum(dim=0)
        self._merge(_count(rows.shape[0], rows.device), mean_b, m2_b, nonempty=rows.shape[0] > 0)

    def update_columns(self, columns: torch.Tensor) -> None:
        """``update(columns.T)`` for vectors stored as columns (size × B, contiguous)."""
        mean_b = columns.mean(dim=1)
        centred = columns - mean_b[:, None]
        m2_b = centred @ centred.T if self.full else (centred * centred).sum(dim=1)
        self._merge(_count(columns.shape[1], columns.device), mean_b, m2_b, nonempty=columns.shape[1] > 0)

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
        self._S = torch.as_tensor(witness_matrix(spec), device=self.device)
        # Constants of update(), made once: β·Sᵀ, class indices, the path's t values.
        self._beta_ST = (spec.beta * self._S).T.contiguous()
        self._class_index = torch.arange(K, device=self.device)[:, None]
        self._path_t = torch.tensor(PATH_TS, dtype=torch.float64, device=self.device)
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
    def _count_bad_prob_columns(pT: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
        """Rows that are not probability vectors (negative, NaN/inf, or not summing to 1 within the
        tolerance), for K×B columns: NaN fails both comparisons, ±inf the sum's."""
        ok = (pT.amin(dim=0) >= 0) & ((sums - 1).abs() <= PROB_SUM_TOLERANCE)
        return (~ok).sum().to(torch.float64)

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
        if mu.shape[0] == 0:
            return
        # Per-sample quantities are reductions over the K classes. They are computed on K×B
        # column layouts (pT, zT, qT), where a reduction over classes runs along dim 0 and is
        # vectorised over the batch: several times fewer cycles on a CPU than row-wise
        # reductions of length K, and fewer kernels on a GPU. Everything stays float64.
        f64 = torch.float64
        mu = mu.detach().to(self.device, f64)
        pT = p.detach().to(self.device, f64).T.contiguous()
        n = mu.shape[0]
        p_sums = pT.sum(dim=0)
        self._add("bad_mu", nonfinite_rows(mu).to(f64))
        self._add("bad_p", self._count_bad_prob_columns(pT, p_sums))

        zT = self._beta_ST @ mu.T  # z_i = β Sᵀ μ_i, as columns
        z_max = zT.amax(dim=0)
        shifted = zT - z_max
        expz = shifted.exp()
        norm = expz.sum(dim=0)
        logqT = shifted - norm.log()  # log_softmax, by its definition
        qT = expz / norm
        ce = -(pT * logqT).sum(dim=0)
        logpT = pT.log()
        plogp = torch.where(pT > 0, pT * logpT, 0.0)  # xlogy(p, p)
        h = -plogp.sum(dim=0)
        # torch.max over a dim gives the first index on ties (documented), as argmax in numpy
        p_max, teacher_class = pT.max(dim=0)
        onehotT = (teacher_class[None, :] == self._class_index).to(f64)  # K×B
        agree = (qT.max(dim=0).indices == teacher_class).to(f64)

        self.p_ce.update_columns(torch.cat([pT, ce[None, :]], dim=0))
        self._update_path(pT, p_sums)
        self.mu.update(mu)
        self._add("sum_h", h.sum())
        self._add("sum_agree", agree.sum())
        # ‖β S (q_i − p_i)‖ = β‖S (q_i − p_i)‖: β applied after the norm, whose terms are then at
        # most 4 and cannot overflow when β is huge.
        escape = self._S @ (qT - pT)
        self._add("sum_escape", self.spec.beta * (escape * escape).sum(dim=0).sqrt().sum())
        self._add("min_mu", mu.amin(dim=0))
        self._add("max_mu", mu.amax(dim=0))

        per_sample = torch.stack([torch.ones_like(ce), p_max, agree, ce - h, qT.gather(0, teacher_class[None, :])[0]])
        self._add("class_stats", per_sample @ onehotT.T)

        if logvar is not None:
            logvar = logvar.detach().to(self.device, f64)
            if logvar.shape != mu.shape:
                raise AuditInputError(f"log-variances have shape {tuple(logvar.shape)}, expected {tuple(mu.shape)}")
            self._add("bad_logvar", nonfinite_rows(logvar).to(f64))
            self._add("n_logvar", _count(n, self.device))
            self._add("sum_prior_kl", 0.5 * (mu * mu + logvar.exp() - logvar - 1).sum(dim=0))

        if self.with_view:
            assert p_view is not None  # refused above when missing
            pv = p_view.detach().to(self.device, f64)
            if pv.shape != p.shape:
                raise AuditInputError(
                    f"encoder-view probabilities have shape {tuple(pv.shape)}, expected {tuple(p.shape)}"
                )
            pvT = pv.T.contiguous()
            self._add("bad_p_view", self._count_bad_prob_columns(pvT, pvT.sum(dim=0)))
            tv = 0.5 * (pT - pvT).abs().sum(dim=0)
            z_range = z_max - zT.amin(dim=0)
            self._add("sum_p_view", pvT.sum(dim=1))
            self._add("sum_ce_view", -(pvT * logqT).sum())
            self._add("sum_tv_range", (tv * z_range).sum())
            self._add("sum_tv", tv.sum())
            self._add("sum_kl_view", plogp.sum() - torch.where(pT > 0, pT * pvT.log(), 0.0).sum())

    def _update_path(self, pT: torch.Tensor, p_sums: torch.Tensor) -> None:
        """Σ‖ℓ(p̃)‖² and Σ_i CE(p_i, softmax(t·ℓ(p̃_i))) for every t at once (p̃ = max(p, floor)).

        CE_t = Σ_k p_k (lse_t − t·ℓ_k) with lse_t = log Σ_k exp(t·ℓ_k). The t are 0, Δ, 2Δ, …, so
        exp(jΔ·ℓ) is the j-th power of exp(Δ·ℓ): one exp and repeated products instead of an exp
        per t (rounding grows by at most j ulps). The products are a loop of T−2 multiplications,
        not ``cumprod`` over an expanded tensor, which measured 2–3× slower on a CPU for the same
        bits. No max-shift is needed: ℓ lies in [log floor, −log floor] ≈ [−28, 28] and t in
        [0, 1], so nothing overflows.
        """
        logp = pT.clamp(min=PATH_PROB_FLOOR).log()
        centred = logp - logp.mean(dim=0)
        self._add("sum_sq_centered_log", (centred * centred).sum())
        step = (PATH_TS[1] * centred).exp()
        powers = torch.empty((len(PATH_TS) - 1, *step.shape), dtype=step.dtype, device=step.device)
        powers[0] = step  # powers[j − 1] = exp(jΔ·ℓ), j = 1 … T−1
        for j in range(1, len(powers)):
            torch.mul(powers[j - 1], step, out=powers[j])
        lse = torch.cat(
            [
                torch.full((1, pT.shape[1]), math.log(pT.shape[0]), dtype=pT.dtype, device=pT.device),
                powers.sum(dim=1).log(),
            ]
        )  # T×B; t = 0 gives log K
        self._add("path_ce", lse @ p_sums - self._path_t * (pT * centred).sum())

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
