"""The ``encode`` adapter: what libraries return, read as μ (B, d) and log σ², with the record of what
was read; flattening checked against numpy's C-order reshape."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from auditor.errors import AuditInputError
from auditor.sources.models.encode import read_means

X = torch.randn(5, 3)
MU, LV = torch.randn(5, 4), torch.randn(5, 4)


class Returns(nn.Module):
    def __init__(self, output):
        super().__init__()
        self.output = output

    def encode(self, x):
        return self.output


@dataclass
class Output:
    mu: torch.Tensor
    log_var: torch.Tensor
    z: torch.Tensor  # a sample: never read


class LatentDist:  # the shape of diffusers' DiagonalGaussianDistribution
    def __init__(self, mean, logvar):
        self.mean, self.logvar = mean, logvar

    def sample(self):
        return self.mean + torch.randn_like(self.mean)


class WithLatentDist:
    def __init__(self, dist):
        self.latent_dist = dist


@pytest.mark.parametrize(
    "output, mean_source, logvar_source",
    [
        (MU, "encode(x)", None),
        ((MU, LV), "encode(x)[0]", "encode(x)[1]"),
        ([MU], "encode(x)[0]", None),
        ({"mean": MU, "logvar": LV, "sample": LV}, "encode(x).mean", "encode(x).logvar"),
        ({"embedding": MU, "log_covariance": LV}, "encode(x).embedding", "encode(x).log_covariance"),
        (Output(MU, LV, LV), "encode(x).mu", "encode(x).log_var"),
        (WithLatentDist(LatentDist(MU, LV)), "encode(x).latent_dist.mean", "encode(x).latent_dist.logvar"),
        ({"latent_dist": LatentDist(MU, LV)}, "encode(x).latent_dist.mean", "encode(x).latent_dist.logvar"),
        ((LatentDist(MU, LV),), "encode(x)[0].mean", "encode(x)[0].logvar"),
        (argparse.Namespace(mu=MU, z=LV), "encode(x).mu", None),
    ],
)
def test_each_kind_of_output(output, mean_source, logvar_source):
    mu, logvar, record = read_means(Returns(output), X)
    assert torch.equal(mu, MU)
    assert (record.mean, record.logvar) == (mean_source, logvar_source)
    assert (logvar is None) == (logvar_source is None)
    if logvar is not None:
        assert torch.equal(logvar, LV)
    assert record.latent_shape == (4,) and not record.flattened


def test_a_torch_distribution_gives_its_mean_and_log_variance():
    normal = torch.distributions.Independent(torch.distributions.Normal(MU, LV.exp()), 1)
    mu, logvar, record = read_means(Returns(normal), X)
    assert torch.equal(mu, MU)
    np.testing.assert_allclose(logvar.numpy(), 2 * LV.numpy(), rtol=1e-6, atol=1e-6)
    assert record.logvar == "log(encode(x).variance)"


def test_spatial_means_are_flattened_in_c_order_whatever_the_memory_layout():
    spatial = torch.randn(5, 2, 3, 3)
    mu, logvar, record = read_means(Returns((spatial.to(memory_format=torch.channels_last), spatial * 0)), X)
    np.testing.assert_array_equal(mu.numpy(), spatial.numpy().reshape(5, -1, order="C"))
    assert logvar is not None and logvar.shape == (5, 18)
    assert record.flattened and record.latent_shape == (2, 3, 3)
    assert record.as_dict()["flattened"].startswith("C order")


def test_a_scalar_mean_per_sample_is_one_latent_and_a_mismatched_logvar_is_not_used():
    mu, _, record = read_means(Returns(torch.arange(5.0)), X)
    assert mu.shape == (5, 1) and record.latent_shape == ()
    _, logvar, record = read_means(Returns((MU, torch.zeros(5, 1))), X)  # e.g. a concentration
    assert logvar is None and record.logvar is None


@pytest.mark.parametrize(
    "output, message",
    [
        ({"z": MU}, "no tensor mean, mu, embedding and no latent_dist"),
        (Output(MU, LV, LV).__dict__ | {"mean": LV}, "two different tensors 'mean' and 'mu'"),
        (MU[:2], "first dimension must be the batch of 5"),
        ((), "empty tuple"),
        (np.zeros((5, 4)), "returned a ndarray"),
    ],
)
def test_what_cannot_be_used_is_refused_in_one_line(output, message):
    with pytest.raises(AuditInputError, match=message) as error:
        read_means(Returns(output), X)
    assert "\n" not in str(error.value)
