"""``AlignmentLoss`` against the formula in plain numpy, its gradient, and the reference trainer's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import AlignmentLoss
from auditor.errors import AuditInputError
from auditor.training.config import TrainConfig
from auditor.training.trainer import fresh_model, train_model

from . import reference as ref


def plain_loss(mu: np.ndarray, p: np.ndarray, K: int, beta: float, offset: int) -> float:
    """mean_i Σ_k p_ik (log p_ik − log q_ik), q_i = softmax(β Sᵀμ_i), 0·log 0 = 0 (docs/mathematics.md)."""
    z = beta * mu @ ref.witness_S(K, mu.shape[1], offset)
    top = z.max(axis=1, keepdims=True)
    log_q = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float((p_log_p - p * log_q).sum(axis=1).mean())


def witness_case(seed: int, n: int, K: int, d: int, zeros: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)) * 2.0
    p = ref.softmax(rng.normal(size=(n, K)) * 3.0)
    if zeros:  # teacher rows whose first class underflowed to exactly 0
        p[::2, 0] = 0.0
        p /= p.sum(axis=1, keepdims=True)
    return mu, p


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 7),
    spare=st.integers(0, 3),
    offset=st.integers(0, 2),
    n=st.integers(1, 16),
    beta=st.floats(0.05, 8.0),
    seed=st.integers(0, 2**31),
    zeros=st.booleans(),
)
def test_equals_the_formula_in_float64(K, spare, offset, n, beta, seed, zeros):
    d = offset + K - 1 + spare
    mu, p = witness_case(seed, n, K, d, zeros)
    loss = AlignmentLoss(K, d, beta, offset)(torch.tensor(mu), torch.tensor(p))
    assert loss.dtype == torch.float64 and loss.shape == ()
    assert float(loss) == pytest.approx(plain_loss(mu, p, K, beta, offset), rel=1e-12, abs=1e-12)


def test_gradients_reach_mu_only_and_are_the_escape_direction():
    K, d, beta, offset, n = 4, 7, 1.5, 2, 9
    mu, p = witness_case(3, n, K, d, zeros=True)
    mu_t = torch.tensor(mu, requires_grad=True)
    p_t = torch.tensor(p, requires_grad=True)  # as if it came from a differentiable teacher
    loss_fn = AlignmentLoss(K, d, beta, offset)
    loss_fn(mu_t, p_t).backward()
    assert p_t.grad is None  # the teacher is fixed
    assert list(loss_fn.parameters()) == []  # nothing in the witness is learned
    assert [name for name, _ in loss_fn.named_buffers()] == ["S"] and loss_fn.state_dict() == {}
    # docs/mathematics.md: ∂KL(p_i‖q_i)/∂μ_i = β S (q_i − p_i), here over the batch mean.
    S = ref.witness_S(K, d, offset)
    q = ref.softmax(beta * mu @ S)
    assert mu_t.grad.numpy() == pytest.approx(beta * (q - p) @ S.T / n, rel=1e-12, abs=1e-14)


def test_float32_and_autocast_keep_the_float32_value():
    K, d, beta = 5, 6, 2.0
    mu, p = witness_case(4, 32, K, d, zeros=False)
    loss_fn = AlignmentLoss(K, d, beta)
    mu32, p32 = torch.tensor(mu, dtype=torch.float32), torch.tensor(p, dtype=torch.float32)
    plain = loss_fn(mu32, p32)
    assert plain.dtype == torch.float32
    assert float(plain) == pytest.approx(plain_loss(mu, p, K, beta, 0), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # would run the matmul in bfloat16
        assert torch.equal(loss_fn(mu32, p32), plain)
        assert loss_fn(mu32.bfloat16(), p32).dtype == torch.float32  # a half-precision μ is lifted to float32


@pytest.mark.parametrize(
    "mu_shape, p_shape, match",
    [((4, 5), (4, 3), r"mu must have shape \(batch, 6\)"), ((4, 6), (4, 4), r"teacher_probs must have shape \(4, 3\)")],
)
def test_shapes_that_do_not_fit_the_witness_are_refused(mu_shape, p_shape, match):
    with pytest.raises(ValueError, match=match):
        AlignmentLoss(3, 6, 1.0)(torch.zeros(mu_shape), torch.full(p_shape, 1 / 3))


@pytest.mark.parametrize(
    "args, match", [((1, 4, 1.0), "at least 2 classes"), ((4, 2, 1.0), "too small"), ((4, 4, 0.0), "beta")]
)
def test_settings_the_witness_cannot_have_are_refused(args, match):
    with pytest.raises(AuditInputError, match=match):
        AlignmentLoss(*args)


def test_the_reference_trainer_optimises_the_same_loss():
    # One batch per epoch: the epoch's align_batch is the loss of the initial model's means on all rows,
    # which AlignmentLoss must reproduce (same threads, same float32 arithmetic).
    rng = np.random.default_rng(5)
    K, d, beta, n = 4, 6, 1.5, 40
    x = torch.tensor(rng.random((n, 10)), dtype=torch.float32)
    p = torch.tensor(ref.softmax(rng.normal(size=(n, K)) * 2.0))
    cfg = TrainConfig(method="aligned", epochs=1, batch_size=n, latent_dim=d, hidden=(8,), beta=beta, seed=3)
    result = train_model(cfg, x, p)
    model = fresh_model(result.architecture, cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.no_grad():
            mu, _ = model.encode(x)
            expected = AlignmentLoss(K, d, beta)(mu, p.float())
    finally:
        torch.set_num_threads(threads)
    assert result.history[1]["align_batch"] == pytest.approx(float(expected), rel=1e-12)
    assert float(expected) == pytest.approx(plain_loss(mu.double().numpy(), p.numpy(), K, beta, 0), rel=1e-5)
