"""The update's compiled loops on a CPU (auditor/certificate/update_kernels.py) against the
torch form of the same update, which devices and CPUs at small K run: the same state to rounding,
the same bad rows."""

import numpy as np
import pytest
import torch

from auditor.certificate.state import CertificateState
from auditor.certificate.witness import WitnessSpec
from auditor.errors import AuditInputError


def _in_form(state: CertificateState, compiled: bool) -> CertificateState:
    # either form on the CPU, whatever K (by default the loops from COMPILED_FROM_CLASSES classes)
    state._compiled_loops = compiled
    return state


def _compiled(state: CertificateState) -> CertificateState:
    return _in_form(state, True)


def _torch_form(state: CertificateState) -> CertificateState:
    return _in_form(state, False)


def test_the_loops_are_used_on_a_cpu_from_64_classes():
    assert not CertificateState(WitnessSpec(63, 63, 1.0))._compiled_loops
    assert CertificateState(WitnessSpec(64, 64, 1.0))._compiled_loops


def _batches(K: int, d: int, seed: int, rows: int = 300):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        mu = torch.from_numpy(rng.normal(0, 1.5, (rows, d)))
        logvar = torch.from_numpy(rng.normal(0, 0.3, (rows, d)))
        logits = torch.from_numpy(rng.normal(0, 4, (rows, K)))
        p = torch.softmax(logits, dim=1)
        p[0] = 0.0  # a one-hot row: 0·log 0 in the entropy, the path's floor
        p[0, K - 1] = 1.0
        p[1] = 1.0 / K  # a tie over every class: the first index is the teacher's class
        mu[2] = 0.0  # a uniform witness: ties in q
        p[3, : K // 2] = 0.0  # exact zeros beside positive entries
        p[3] /= p[3].sum()
        p_view = torch.softmax(torch.from_numpy(rng.normal(0, 4, (rows, K))), dim=1)
        yield mu.float(), p, logvar.float(), p_view


def _assert_same_state(ours: CertificateState, theirs: CertificateState) -> None:
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        scale = b[key].abs().max().clamp(min=1e-300)
        assert torch.allclose(a[key], b[key], rtol=1e-12, atol=1e-12 * float(scale)), key


@pytest.mark.parametrize("K, d, offset", [(2, 2, 1), (3, 4, 0), (10, 32, 5), (200, 200, 0)])
@pytest.mark.parametrize("with_view", [False, True])
def test_fused_update_gives_the_torch_forms_state(K, d, offset, with_view):
    spec = WitnessSpec(K, d, beta=2.5, offset=offset)
    fused, plain = _compiled(CertificateState(spec, with_view)), _torch_form(CertificateState(spec, with_view))
    for mu, p, logvar, p_view in _batches(K, d, seed=K):
        for state in (fused, plain):
            state.update(mu, p, logvar, p_view if with_view else None)
    _assert_same_state(fused, plain)
    numbers, expected = fused.compute(), plain.compute()
    assert numbers.margin == pytest.approx(expected.margin, rel=1e-12, abs=1e-12)
    assert numbers.margin_std_error == pytest.approx(expected.margin_std_error, rel=1e-10)


def test_fused_update_reads_strided_rows():
    # μ as a column slice of a model's output (μ, log σ²): not contiguous
    K, d = 10, 16
    out = torch.randn(64, 2 * d, dtype=torch.float64)
    p = torch.softmax(torch.randn(64, K, dtype=torch.float64), dim=1)
    spec = WitnessSpec(K, d, beta=1.0)
    fused, plain = _compiled(CertificateState(spec)), _torch_form(CertificateState(spec))
    for state in (fused, plain):
        state.update(out[:, :d], p, out[:, d:])
    _assert_same_state(fused, plain)


@pytest.mark.parametrize(
    "spoil, count",
    [
        (lambda p: p.__setitem__((4, 0), -0.25), 1),
        (lambda p: p.__setitem__((5, 2), float("nan")), 1),
        (lambda p: p.__setitem__((6, 1), float("inf")), 1),
        (lambda p: p.__setitem__((7, 1), float("-inf")), 1),
        (lambda p: p[8:11].mul_(1.5), 3),
    ],
)
def test_fused_update_counts_the_torch_forms_bad_rows(spoil, count):
    K, d = 10, 12
    p = torch.softmax(torch.randn(32, K, dtype=torch.float64), dim=1)
    spoil(p)
    spec = WitnessSpec(K, d, beta=1.0)
    for state in (_compiled(CertificateState(spec)), _torch_form(CertificateState(spec))):
        state.update(torch.randn(32, d), p)
        assert int(state.fields["bad_p"].value) == count
        with pytest.raises(AuditInputError, match=f"not probability vectors in {count} of 32 rows"):
            state.compute()


def test_fused_update_counts_non_finite_means():
    K, d = 5, 8
    mu = torch.randn(16, d)
    mu[3, 2] = float("nan")
    mu[9, 0] = float("inf")
    p = torch.softmax(torch.randn(16, K, dtype=torch.float64), dim=1)
    for state in (
        _compiled(CertificateState(WitnessSpec(K, d, beta=1.0))),
        CertificateState(WitnessSpec(K, d, beta=1.0)),
    ):
        state.update(mu, p)
        with pytest.raises(AuditInputError, match="latent means contain NaN or inf in 2 of 16 samples"):
            state.compute()


def test_loops_compile_without_a_writable_cache(monkeypatch):
    # numba finds no place for its cache (a read-only installation, no writable home): compiled anyway
    from numba import njit
    from numba.core import caching

    from auditor.compiled import compiled

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])

    def total(x):
        result = 0.0
        for value in x:
            result += value
        return result

    with pytest.raises(RuntimeError, match="no locator available"):
        njit(cache=True)(total)
    assert compiled()(total)(np.arange(4.0)) == 6.0


_UPDATE_AND_TEACH = """
import sys, torch
from auditor.certificate.state import CertificateState
from auditor.certificate.witness import WitnessSpec
from auditor.teachers.pca_gmm import PcaGmmTeacher
K = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
teacher = PcaGmmTeacher(torch.zeros(8), torch.eye(3, 8), torch.full((K,), -float(K)).log_softmax(0),
                        300 + torch.randn(K, 3, generator=g), torch.full((K, 3), 1e-3), 1.0)
p = teacher(300 + torch.randn(64, 8, generator=g))
state = CertificateState(WitnessSpec(K, K, 1.0))
state.update(torch.randn(64, K, generator=g), p, torch.randn(64, K, generator=g))
state.compute()
print("numba" in sys.modules)
"""


@pytest.mark.parametrize("K, loaded", [(10, "False"), (64, "True")])
def test_numba_is_loaded_only_where_the_loops_pay(K, loaded):
    # in a fresh process: this one may have imported numba already
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _UPDATE_AND_TEACH, str(K)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == loaded
