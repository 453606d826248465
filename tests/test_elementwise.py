"""The update's numpy kernels on a CPU (auditor/certificate/elementwise.py) against torch's own."""

import warnings

import numpy as np
import pytest
import torch

from auditor.certificate import elementwise


def _values() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.concatenate([rng.normal(0, 30, 4000), rng.uniform(-1e-8, 1e-8, 96)]).reshape(64, 64))


@pytest.mark.parametrize(
    "ours, theirs, domain",
    [
        (elementwise.exp, torch.exp, lambda x: x),
        (elementwise.log, torch.log, lambda x: x.abs() + 1e-300),
        (elementwise.expm1, torch.expm1, lambda x: x),
    ],
)
def test_kernels_agree_with_torch_to_two_ulps(ours, theirs, domain):
    x = domain(_values())
    out = torch.empty_like(x)
    assert ours(x, out=out) is out
    expected = theirs(x)
    ulp = np.spacing(np.abs(expected.numpy()))
    assert np.all(np.abs(out.numpy() - expected.numpy()) <= 2 * ulp)


def test_kernels_write_in_place():
    x = _values()
    expected = elementwise.exp(x, out=torch.empty_like(x))
    assert elementwise.exp(x, out=x) is x
    assert torch.equal(x, expected)


def test_bad_values_give_torchs_results_without_warnings():
    x = torch.tensor([[0.0, -1.0, float("nan"), 1e300, float("inf")]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logs = elementwise.log(x, out=torch.empty_like(x))
        exps = elementwise.exp(
            torch.tensor([[800.0, float("-inf")]], dtype=torch.float64), out=torch.empty(1, 2, dtype=torch.float64)
        )
        expm1s = elementwise.expm1(
            torch.tensor([[800.0]], dtype=torch.float64), out=torch.empty(1, 1, dtype=torch.float64)
        )
    torch.testing.assert_close(logs, torch.log(x), equal_nan=True)
    assert exps.tolist() == [[float("inf"), 0.0]]
    assert expm1s.item() == float("inf")


def test_row_argmax_takes_the_first_of_ties_as_torch_does():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 0.5, 0.5]], dtype=torch.float64)
    assert elementwise.row_argmax(x).tolist() == [1, 0, 2]
    assert elementwise.row_argmax(x).tolist() == x.max(dim=1).indices.tolist()
    assert elementwise.row_argmax(x).dtype == torch.int64
