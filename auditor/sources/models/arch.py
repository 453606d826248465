"""``--arch module:factory`` or ``--arch path/to/file.py:factory``, called with ``--arch-arg name=value``
keyword arguments: the user's own code builds the module. Shared by every model source that takes ``--arch``.

Running a factory runs that code; the certificate records the spec, the keyword arguments, the
factory's source file (hashed as an input) and a digest of the module's weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ...errors import AuditInputError, describe
from ..hashing import InputRecord, file_record
from .digest import weights_digest
from .interface import Encoder, FixedWitness, ModelRequest
from .libraries import library_versions

_PRIVATE_NAMES = itertools.count()


def parse_arch_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``name=value`` pairs as keyword arguments: the value parsed as JSON when it parses (``16``,
    ``0.5``, ``true``, ``[400, 200]``, ``"16"``), else taken as the string itself (``relu``)."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise AuditInputError(f"--arch-arg {pair!r}: expected name=value with a Python identifier as the name")
        if name in kwargs:
            raise AuditInputError(f"--arch-arg {name} is given twice")
        try:
            kwargs[name] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[name] = text
    return kwargs


def split_arch_spec(spec: str) -> tuple[str, str]:
    """(module or file, factory name); the last colon splits, so a Windows drive letter stays in the path."""
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute:
        raise AuditInputError(f"--arch must look like module:factory or path/to/file.py:factory, got {spec!r}")
    return target, attribute


def is_file_spec(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_file(spec: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise AuditInputError(f"--arch {spec}: no such file {path}")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so that the file's own `import sibling` lines work
    name = f"_vae_audit_arch_{next(_PRIVATE_NAMES)}_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise AuditInputError(f"--arch {spec}: {path} cannot be imported as Python source")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # before it runs: dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise AuditInputError(f"--arch {spec}: importing {path} failed ({describe(exc)})") from None
    return module


def _import_module(spec: str, name: str) -> ModuleType:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # so that a user's local module is found
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise AuditInputError(f"--arch {spec}: cannot import module {name!r} ({exc})") from None
    except Exception as exc:
        raise AuditInputError(f"--arch {spec}: importing {name!r} failed ({describe(exc)})") from None


def _source_file(factory: Any, module: ModuleType) -> Path | None:
    """Where the factory is defined (for a module spec), as a path relative to the current folder when inside it."""
    try:
        source = inspect.getsourcefile(factory) or getattr(module, "__file__", None)
    except TypeError:  # built-in or C-implemented callables have no source file
        source = getattr(module, "__file__", None)
    if not source or not os.path.isfile(source):
        return None
    path = Path(source).resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def import_factory(spec: str) -> tuple[Callable[..., Any], Path | None]:
    """The callable ``spec`` names (the factory name may be dotted: ``VAE.from_config``) and its source file."""
    target, attribute = split_arch_spec(spec)
    file_spec = is_file_spec(target)
    module = _import_file(spec, Path(target)) if file_spec else _import_module(spec, target)
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise AuditInputError(f"--arch {spec}: {target} has no {attribute!r}")
    if not callable(factory):
        raise AuditInputError(f"--arch {spec}: {attribute} is not callable")
    return factory, Path(target) if file_spec else _source_file(factory, module)


@dataclass
class ArchModule:
    """The module an ``--arch`` factory built, the record of how, and the factory's source file."""

    module: nn.Module
    record: dict
    inputs: list[InputRecord]
    libraries: dict[str, str]  # torch's version, and the factory's package's when it is an installed one


def build_arch(request: ModelRequest) -> ArchModule:
    """``factory(**kwargs)`` of ``--arch`` and ``--arch-arg``: an ``nn.Module`` with an ``encode(x)`` method."""
    assert request.arch is not None  # only the --arch sources build one
    spec, kwargs = request.arch, parse_arch_args(request.arch_args)
    factory, source = import_factory(spec)
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise AuditInputError(
            f"--arch {spec}: calling it with {kwargs or 'no arguments'} failed ({describe(exc)})"
        ) from None
    if not isinstance(module, nn.Module) or not callable(getattr(module, "encode", None)):
        raise AuditInputError(f"--arch {spec}: the factory must return an nn.Module with an encode(x) method")
    record = {"factory": spec, "kwargs": kwargs, "factory_source": str(source) if source else None}
    target = split_arch_spec(spec)[0]
    packages = () if is_file_spec(target) else (target.split(".")[0],)  # e.g. diffusers for diffusers:AutoencoderKL
    inputs = [file_record("model-code", source)] if source else []
    return ArchModule(module, record, inputs, library_versions("torch", *packages))


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str | None, path: Path) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, the prefix removed (all of them when there is none)."""
    if not prefix:
        return tensors
    kept = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
    if not kept:
        heads = sorted({name.split(".", 1)[0] + "." for name in tensors})[:6]
        raise AuditInputError(
            f"{path}: no tensor name starts with --key-prefix {prefix!r} (the names start with {', '.join(heads)})"
        )
    return kept


def arch_encoder(
    built: ArchModule, request: ModelRequest, inputs: list[InputRecord], details: dict, witness: FixedWitness | None
) -> Encoder:
    """The Encoder of a module built by ``--arch`` whose weights (if any) are loaded: the digest covers its whole state."""
    built.module.eval()
    record = {
        "source": "arch",
        **built.record,
        "weights": str(request.model) if request.model else None,
        **details,
        "weights_digest": weights_digest(
            built.module.state_dict(), "the whole state_dict of the module the factory built"
        ),
        "libraries": built.libraries,
    }
    return Encoder(record=record, inputs=[*built.inputs, *inputs], module=built.module, witness=witness)
