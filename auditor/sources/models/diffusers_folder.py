"""``--model FOLDER`` saved by diffusers: an ``AutoencoderKL`` folder (``config.json`` with ``_class_name``
``AutoencoderKL`` and its safetensors weights), or a pipeline folder (``model_index.json``) with a
``vae/`` sub-folder.

Read offline from safetensors only (no pickle, no hub), strictly: diffusers would fill missing
weights with random values and only log a warning, so any missing, unexpected or misshapen tensor
is refused. μ and log σ² are ``encode(x).latent_dist.mean`` / ``.logvar`` on the data's [0, 1]
inputs mapped to the model's [−1, 1], before ``scaling_factor``/``shift_factor`` (what a diffusion
pipeline applies afterwards: recorded, not applied); tiling and slicing are off, so that μ(x)
depends on x alone. The spatial latents are flattened in C order (:mod:`auditor.sources.models.encode`).
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ...errors import AuditInputError, describe
from ..hashing import InputRecord, file_record
from .config_files import read_config
from .digest import weights_digest
from .interface import Encoder, ModelRequest, ModelSource
from .libraries import library_versions, require

CLASSES = ("AutoencoderKL",)
ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # every tensor AutoencoderKL.encode uses
WEIGHTS = "diffusion_pytorch_model"


class DiffusersEncoder(nn.Module):
    """``vae.encode`` on [0, 1] inputs: diffusers' autoencoders take images in [−1, 1]."""

    def __init__(self, vae: Any):
        super().__init__()
        self.vae = vae

    def encode(self, x: torch.Tensor):
        return cast(Any, self.vae).encode(2 * x - 1)


def _model_folder(root: Path) -> tuple[Path, list[InputRecord], str | None]:
    """The folder holding the VAE's config.json, the pipeline's model_index.json record, and the pipeline's class."""
    if not (root / "model_index.json").is_file():
        return root, [], None
    index = read_config(root / "model_index.json")
    if not (root / "vae" / "config.json").is_file():
        raise AuditInputError(f"{root}: a diffusers pipeline folder (model_index.json) without vae/config.json")
    pipeline = index.get("_class_name")
    return root / "vae", [file_record("model-config", root / "model_index.json")], str(pipeline) if pipeline else None


def _weight_files(folder: Path) -> list[tuple[str, Path]]:
    """(role, path) of the safetensors weights diffusers will read: one file, or an index and its shards."""
    single, index = folder / f"{WEIGHTS}.safetensors", folder / f"{WEIGHTS}.safetensors.index.json"
    if single.is_file():
        return [("model", single)]
    if index.is_file():
        weight_map = read_config(index).get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        if not shards or not all(isinstance(s, str) and (folder / s).is_file() and "/" not in s for s in shards):
            raise AuditInputError(f"{index}: its weight_map does not name shard files present in {folder}")
        return [("model-config", index), *(("model", folder / s) for s in shards)]
    others = sorted(p.name for p in folder.glob(f"{WEIGHTS}*") if p.is_file())
    found = f" (found {', '.join(others)}: pickled .bin and variant weights are not read)" if others else ""
    raise AuditInputError(f"{folder}: no {WEIGHTS}.safetensors{found}")


@contextlib.contextmanager
def _quiet_diffusers_logging(diffusers):
    """diffusers' load warnings are checked from output_loading_info instead of being printed."""
    logging = diffusers.utils.logging
    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def _load(model_class, folder: Path) -> Any:
    try:
        vae, info = model_class.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False, output_loading_info=True
        )
    except Exception as exc:  # OSError, ValueError, safetensors' and torch's errors on a bad file
        raise AuditInputError(f"{folder}: diffusers cannot load it ({describe(exc)})") from None
    problems = [f"{key}: {', '.join(map(str, info[key][:4]))}" for key in sorted(info) if info.get(key)]
    if problems:
        raise AuditInputError(f"{folder}: the weights do not match config.json ({'; '.join(problems)})")
    return vae


class DiffusersFolder(ModelSource):
    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        if request.model is None or not Path(request.model).is_dir():
            return False
        root = Path(request.model)
        return (root / "model_index.json").is_file() or (root / "config.json").is_file()

    def open(self, request: ModelRequest) -> Encoder:
        assert request.model is not None  # the registry opens a source only for a request it wanted
        root = Path(request.model)
        if request.arch is not None:
            raise AuditInputError(f"{root}: a diffusers folder describes its own architecture: drop --arch")
        folder, inputs, pipeline = _model_folder(root)
        config = read_config(folder / "config.json")
        class_name = config.get("_class_name")
        if class_name not in CLASSES:
            raise AuditInputError(
                f"{folder / 'config.json'}: _class_name {class_name!r} is not a supported autoencoder ({', '.join(CLASSES)})"
            )
        if config.get("force_upcast") and request.precision == "fp16":
            raise AuditInputError(
                f"{folder / 'config.json'}: force_upcast is set (this VAE overflows in float16): use --precision fp32 or bf16"
            )
        weights = _weight_files(folder)
        inputs += [file_record("model-config", folder / "config.json"), *(file_record(r, p) for r, p in weights)]
        diffusers = require("diffusers", "diffusers", "a diffusers model folder")
        importlib.import_module("safetensors.torch")  # older diffusers use it without importing it
        with _quiet_diffusers_logging(diffusers):
            vae = _load(getattr(diffusers, class_name), folder)
        vae.eval()
        vae.disable_tiling()
        vae.disable_slicing()
        encoder_tensors = {k: v for k, v in vae.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
        record = {
            "source": "diffusers",
            "path": str(root),
            "class": class_name,
            "pipeline": pipeline,
            "weights": [str(p) for _, p in weights],
            "written_by": f"diffusers {config.get('_diffusers_version')}",
            "input_transform": "2·x − 1: the data's [0, 1] mapped to the model's [−1, 1]",
            "means": "encode(x).latent_dist.mean and .logvar, before scaling_factor and shift_factor",
            "scaling_factor": config.get("scaling_factor"),
            "shift_factor": config.get("shift_factor"),
            "tiling": False,
            "slicing": False,
            "loading": "from_pretrained(use_safetensors=True, local_files_only=True); every weight present, none extra",
            "weights_digest": weights_digest(encoder_tensors, "state_dict names starting with encoder. or quant_conv."),
            "libraries": library_versions("torch", "diffusers", "huggingface-hub", "safetensors"),
        }
        return Encoder(record=record, inputs=inputs, module=DiffusersEncoder(vae))
