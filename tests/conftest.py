"""Fixtures shared by test modules."""

from __future__ import annotations

import pytest

from .hostile_fixtures import LimitedCli
from .report_fixtures import certify


@pytest.fixture(scope="session")
def limited_cli():
    """One child interpreter for every test that runs the CLI under a memory cap and a timeout."""
    cli = LimitedCli()
    yield cli
    cli.close()


@pytest.fixture(scope="session")
def audited(tmp_path_factory):
    """(folder, certificate): a certified audit of precomputed latents with a view gap; read, never changed."""
    folder = tmp_path_factory.mktemp("audited")
    code, cert = certify(folder, view=True)
    assert code == 0
    return folder, cert
