"""``--model FOLDER`` saved by pythae (``model.save(dir)``, or a trainer's ``final_model/``):
``model_config.json`` and ``model.pt``, plus ``encoder.pkl`` when the encoder is a custom network.

``model.pt`` is read with ``torch.load(weights_only=True)``. A built-in encoder is rebuilt by
pythae from ``model_config.json``; a custom one exists only as ``encoder.pkl``, a (cloud)pickle
that runs code when loaded, so it is read only with ``--trust-code`` (recorded in the request).
Either way the encoder's weights are then loaded strictly from ``model.pt``. μ is
``encoder(x).embedding`` and log σ² ``encoder(x).log_covariance`` — never pythae's ``embed(x)``,
which samples. Inputs reach the encoder as they were trained: the data's [0, 1].
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
from torch import nn

from ...errors import AuditInputError, describe
from ..checkpoint import load_state_into
from ..hashing import file_record
from .config_files import read_config
from .digest import weights_digest
from .interface import Encoder, ModelRequest, ModelSource
from .libraries import library_versions, require
from .torch_pickle import load_weights_only, state_dict_in


class PythaeEncoder(nn.Module):
    """A pythae encoder as a module with ``encode(x)``: its output (a ``ModelOutput`` holding ``embedding``
    and ``log_covariance``) is read by :mod:`auditor.sources.models.encode`."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def encode(self, x: torch.Tensor):
        return self.encoder(x)


def _model_class_name(config_name: str, where: Path) -> str:
    """pythae's naming: ``VAEConfig`` → ``VAE``, ``INFOVAE_MMD_Config`` → ``INFOVAE_MMD``."""
    for suffix in ("_Config", "Config"):
        if config_name.endswith(suffix) and len(config_name) > len(suffix):
            return config_name[: -len(suffix)]
    raise AuditInputError(f'{where}: name {config_name!r} is not a pythae model config (e.g. "VAEConfig")')


def _built_in_encoder(config: dict, config_path: Path) -> nn.Module:
    """The encoder pythae builds from the config alone (its default architecture for the model)."""
    models = require("pythae.models", "pythae", "a pythae model folder")
    config_name = str(config["name"])
    model_name = _model_class_name(config_name, config_path)
    config_class, model_class = getattr(models, config_name, None), getattr(models, model_name, None)
    # Only pythae's own model and config classes: the names come from a file.
    if not (
        isinstance(config_class, type)
        and isinstance(model_class, type)
        and issubclass(config_class, models.BaseAEConfig)
        and issubclass(model_class, models.BaseAE)
    ):
        raise AuditInputError(f"{config_path}: pythae has no model {model_name!r}")
    try:
        model = model_class(config_class(**{k: v for k, v in config.items() if k != "name"}))
    except Exception as exc:  # pydantic's ValidationError, TypeError, …
        raise AuditInputError(f"{config_path}: pythae cannot build {model_name} from it ({describe(exc)})") from None
    return model.encoder


def _pickled_encoder(folder: Path) -> nn.Module:
    """``encoder.pkl``, unpickled: runs the code it carries (only with --trust-code)."""
    path = folder / "encoder.pkl"
    if not path.is_file():
        raise AuditInputError(f"{folder}: model_config.json says the encoder is custom, but there is no encoder.pkl")
    require("pythae", "pythae", "a custom pythae encoder")  # the pickle names pythae's classes …
    require("cloudpickle", "pythae", "a custom pythae encoder")  # … and cloudpickle's helpers
    environment = folder / "environment.json"
    saved_python = read_config(environment).get("python_version") if environment.is_file() else None
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if saved_python is not None and saved_python != running:
        raise AuditInputError(
            f"{path}: pickled by Python {saved_python}; its code cannot be loaded by Python {running}"
        )
    try:
        with open(path, "rb") as handle:
            encoder = pickle.load(handle)  # runs code: the user passed --trust-code
    except Exception as exc:
        raise AuditInputError(f"{path}: cannot be unpickled ({describe(exc)})") from None
    if not isinstance(encoder, nn.Module):
        raise AuditInputError(f"{path}: holds a {type(encoder).__name__}, not a torch module")
    return encoder


class PythaeFolder(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return request.model is not None and (Path(request.model) / "model_config.json").is_file()

    def open(self, request: ModelRequest) -> Encoder:
        assert request.model is not None  # the registry opens a source only for a request it wanted
        folder = Path(request.model)
        if request.arch is not None:
            raise AuditInputError(f"{folder}: a pythae folder describes its own encoder: drop --arch")
        config_path, weights_path = folder / "model_config.json", folder / "model.pt"
        config = read_config(config_path)
        if not isinstance(config.get("name"), str):
            raise AuditInputError(f"{config_path}: has no 'name' (pythae writes e.g. \"VAEConfig\")")
        if not weights_path.is_file():
            raise AuditInputError(f"{folder}: no model.pt beside model_config.json")
        saved, stand_ins = load_weights_only(weights_path)
        if stand_ins:
            raise AuditInputError(f"{weights_path}: holds pickled {', '.join(stand_ins)}, not only tensors")
        state, _ = state_dict_in(saved, "model_state_dict", weights_path)
        encoder_state = {name[len("encoder.") :]: t for name, t in state.items() if name.startswith("encoder.")}
        inputs = [file_record("model-config", config_path), file_record("model", weights_path)]
        built_in = config.get("uses_default_encoder", True) is True
        if built_in:
            encoder = _built_in_encoder(config, config_path)
        elif request.trust_code:
            encoder = _pickled_encoder(folder)
            inputs.append(file_record("model-code", folder / "encoder.pkl"))
        else:
            raise AuditInputError(
                f"{folder}: the encoder is a custom network stored in encoder.pkl, a pickle that runs code when loaded: "
                "add --trust-code only if you trust that file"
            )
        load_state_into(encoder, encoder_state, weights_path)
        encoder.eval()
        digested = {f"encoder.{name}": t for name, t in encoder.state_dict().items()}
        record = {
            "source": "pythae",
            "path": str(folder),
            "model": _model_class_name(config["name"], config_path),
            "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "encoder_from": "model_config.json (pythae's built-in network)"
            if built_in
            else "encoder.pkl (trusted code)",
            "means": "encoder(x).embedding and .log_covariance (never embed(x), which samples)",
            "input_transform": "none: the data's [0, 1]",
            "weights_digest": weights_digest(digested, "model.pt's model_state_dict names starting with encoder."),
            "libraries": library_versions("torch", "pythae", *(() if built_in else ("cloudpickle",))),
        }
        return Encoder(record=record, inputs=inputs, module=PythaeEncoder(encoder))
