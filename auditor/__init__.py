"""vae-audit: certify trained VAEs against exact constant collapse of the encoder mean.

The package is one sub-package per concern, each importing only those below it:

    cli/          the ``audit`` command line: one module per command
    training/     the reference trainer, its methods and protocols, ``audit reproduce``, the monitor
    reports/      renderers of a certificate: Markdown, HTML, JUnit, terminal, progress
    audit/        the pass: request → sources → plan → device stream → state → numbers
    sources/      everything that turns a user's files into rows: data sets, model and teacher sources
    teachers/     the PCA → GMM teacher: fitting and searching it
    nets/         the reference architectures, one explicit registry
    certificate/  the mathematics: witness, streaming state, numbers, verdict, design path, the document

The names below are the library's public API, importable from ``auditor`` itself (loaded on first use).
"""

from __future__ import annotations

import importlib

from . import _compat
from ._version import __version__

# Public name → the module that defines it.
PUBLIC_API = {
    "AuditRequest": "auditor.audit.request",
    "run_audit": "auditor.audit.pipeline",
    "AlignmentLoss": "auditor.training.losses",
    "CertificateMonitor": "auditor.training.monitor",
    "CertificateState": "auditor.certificate.state",
    "WitnessSpec": "auditor.certificate.witness",
    "design_table": "auditor.certificate.design",
    "design_summary": "auditor.certificate.design",
    "load_teacher": "auditor.sources.teachers.files",
    "load_witness": "auditor.sources.witness_file",
    "open_dataset": "auditor.sources.datasets.registry",
    "DataOptions": "auditor.sources.datasets.options",
}
__all__ = ["__version__", *PUBLIC_API]

_compat.install()


def __getattr__(name: str):
    if name in PUBLIC_API:
        return getattr(importlib.import_module(PUBLIC_API[name]), name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
