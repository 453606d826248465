"""The import paths of vae-audit 0.1, whose modules all sat directly in ``auditor/``.

They keep working for this release, each with a DeprecationWarning naming the new path; the
documented paths are the new ones. An old module that no longer exists (``auditor.monitor``,
``auditor.design`` …) is served by a stand-in module that looks names up in the new modules, in
order (:data:`MOVED`). Four old modules share their name with a new package (``auditor.audit``,
``auditor.certificate``, ``auditor.cli``, ``auditor.nets``); those packages forward exactly their old names
(:data:`PACKAGE_NAMES`) and nothing else.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED: dict[str, tuple[str, ...]] = {
    "auditor.batching": ("auditor.audit.batch_size", "auditor.audit.memory"),
    "auditor.certificate_check": ("auditor.certificate.check",),
    "auditor.checkpoint": ("auditor.sources.checkpoint",),
    "auditor.cmd_certify": ("auditor.cli.certify", "auditor.reports.writer"),
    "auditor.cmd_design": ("auditor.cli.design",),
    "auditor.cmd_report": ("auditor.cli.report",),
    "auditor.cmd_reproduce": ("auditor.cli.reproduce",),
    "auditor.cmd_teacher": ("auditor.cli.teacher",),
    "auditor.cmd_train": ("auditor.cli.train", "auditor.reports.progress"),
    "auditor.cmd_verify": ("auditor.cli.verify", "auditor.audit.verify", "auditor.certificate.compare"),
    "auditor.data": (
        "auditor.sources.datasets.registry",
        "auditor.sources.datasets.dataset",
        "auditor.sources.datasets.digits",
        "auditor.sources.hashing",
    ),
    "auditor.demo": ("auditor.cli.demo",),
    "auditor.design": ("auditor.certificate.design",),
    "auditor.diagnostics_model": ("auditor.audit.diagnostics", "auditor.nets.likelihood"),
    "auditor.distributed": ("auditor.audit.distributed",),
    "auditor.extract": (
        "auditor.audit.stream",
        "auditor.audit.plan",
        "auditor.audit.forward",
        "auditor.audit.prefetch",
        "auditor.audit.transfer",
        "auditor.audit.update_worker",
        "auditor.sources.models.encode",
        "auditor.sources.arrays",
    ),
    "auditor.fileio": ("auditor.sources.hashing", "auditor.sources.atomic"),
    "auditor.helper_threads": ("auditor.audit.helper_threads",),
    "auditor.lightning_callback": ("auditor.training.lightning",),
    "auditor.monitor": ("auditor.training.monitor",),
    "auditor.net_constvar": ("auditor.nets.constvar", "auditor.nets.registry"),
    "auditor.net_conv": ("auditor.nets.conv", "auditor.nets.registry"),
    "auditor.net_lidvae": ("auditor.nets.lidvae", "auditor.nets.registry"),
    "auditor.progress": ("auditor.reports.progress",),
    "auditor.report": (
        "auditor.certificate.document",
        "auditor.reports.markdown",
        "auditor.reports.rows",
        "auditor.reports.terminal",
        "auditor.reports.writer",
    ),
    "auditor.report_html": ("auditor.reports.html",),
    "auditor.report_junit": ("auditor.reports.junit",),
    "auditor.reproduce": ("auditor.training.reproduce",),
    "auditor.teacher": (
        "auditor.teachers.pca_gmm",
        "auditor.sources.teachers.files",
        "auditor.sources.teachers.program",
        "auditor.sources.teachers.probabilities",
    ),
    "auditor.teacher_fit": (
        "auditor.teachers.fit",
        "auditor.sources.datasets.features",
        "auditor.sources.teachers.files",
    ),
    "auditor.teacher_search": ("auditor.teachers.search",),
    "auditor.tensorfile": ("auditor.sources.arrays", "auditor.sources.safetensors_header"),
    "auditor.train": (
        "auditor.training.trainer",
        "auditor.training.config",
        "auditor.training.run",
        "auditor.training.history",
    ),
    "auditor.train_methods": (
        "auditor.training.methods.base",
        "auditor.training.methods.registry",
        "auditor.training.methods.aligned",
        "auditor.training.methods.elbo",
        "auditor.training.protocols",
        "auditor.training.losses",
        "auditor.nets.likelihood",
    ),
    "auditor.train_methods_decoders": ("auditor.training.methods.decoders",),
    "auditor.witness": ("auditor.certificate.witness",),
}

PACKAGE_NAMES: dict[str, dict[str, str]] = {
    "auditor.audit": {
        "AuditRequest": "auditor.audit.request",
        "request_record": "auditor.audit.request",
        "resolve_device": "auditor.audit.request",
        "AuditResult": "auditor.audit.pipeline",
        "run_audit": "auditor.audit.pipeline",
    },
    "auditor.certificate": {
        **dict.fromkeys(
            (
                "ACTIVE_UNIT_THRESHOLD",
                "PATH_PROB_FLOOR",
                "PATH_TS",
                "CertificateNumbers",
                "confidence_z",
                "numbers_from_state",
            ),
            "auditor.certificate.numbers",
        ),
        **dict.fromkeys(
            ("PROB_SUM_TOLERANCE", "CertificateState", "Moments", "StateField", "nonfinite_rows"),
            "auditor.certificate.state",
        ),
        "Verdict": "auditor.certificate.verdict",
        "decide": "auditor.certificate.verdict",
        "teacher_information": "auditor.certificate.design",
    },
    "auditor.nets": {
        **dict.fromkeys(("ACTIVATIONS", "LIKELIHOODS", "ReferenceVAE"), "auditor.nets.base"),
        "MLPVAE": "auditor.nets.mlp",
        "ARCHITECTURES": "auditor.nets.registry",
        "build_model": "auditor.nets.registry",
    },
    "auditor.cli": {
        "app": "auditor.cli.app",
        "fail": "auditor.cli.app",
        "main": "auditor.cli.app",
        "current_command": "auditor.cli.invocation",
    },
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is an old import path: use {new} (the old one goes in the next release)",
        DeprecationWarning,
        stacklevel=4,
    )


def package_attribute(package: str, name: str):
    """An old name of the module that ``package`` replaced (its ``__getattr__``)."""
    new = PACKAGE_NAMES[package].get(name)
    if new is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{new}.{name}")
    return getattr(importlib.import_module(new), name)


class _OldModule(types.ModuleType):
    """Stands for an old module: every name is looked up in its new modules, in order."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for new in MOVED[self.__name__]:
            module = importlib.import_module(new)
            if hasattr(module, name):
                _warn(f"{self.__name__}.{name}", f"{new}.{name}")
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return _OldModule(spec.name, f"Old path of {', '.join(MOVED[spec.name])} (deprecated).")

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    """Serve the old module names (after every real finder, so that nothing real is shadowed)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())
