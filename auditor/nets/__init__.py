"""The reference architectures (``mlp``, ``conv``, ``lidvae``, ``const-var``), one module each, listed in
:mod:`auditor.nets.registry`, and their likelihoods (:mod:`auditor.nets.likelihood`)."""

from .._compat import package_attribute


def __getattr__(name: str):
    return package_attribute(__name__, name)  # the names of the old module auditor/nets.py
