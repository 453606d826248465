"""State dicts in PyTorch and Lightning files (``.pt``, ``.pth``, ``.ckpt``), read with
``torch.load(weights_only=True)``: no code in the file runs.

Lightning checkpoints often keep hyper-parameters as ``argparse.Namespace``, ``pathlib`` paths or
OmegaConf objects, which the weights-only reader refuses. Such a file is read again with each of
those names bound to an *inert stand-in*: a class that only stores the arguments and state the
pickle gives it, so nothing is imported or run. The stand-ins can only appear outside the
weights: every value of the state dict must be a real tensor, and the names stood in for are
recorded in the certificate.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.serialization

from ...errors import AuditInputError, describe
from ..regular_files import open_input
from ..torch_zip import check_torch_zip, torch_load_weights_only

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
STATE_KEYS = ("state_dict", "model_state_dict", "model")  # Lightning; pythae and training scripts; others


class _InertStandIn:
    """Takes the place of a class or function the file names outside its tensors; runs nothing."""

    original = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(name: str) -> tuple[type, str]:
    return type(f"InertStandIn[{name}]", (_InertStandIn,), {"original": name}), name


def load_weights_only(path: Path) -> tuple[Any, list[str]]:
    """The file's object read weights-only, and the names of the globals replaced by inert stand-ins.

    The file is opened once, as a regular file, and must be a zip of stored records
    (:mod:`auditor.sources.torch_zip`) before torch reads anything from it.
    """
    with open_input(path) as handle:
        check_torch_zip(handle, path, "checkpoint")
        try:
            return torch_load_weights_only(handle), []
        except pickle.UnpicklingError:
            pass  # globals outside the allow-list: retried below with stand-ins
        except Exception as exc:  # corrupt bytes raise IndexError, KeyError, RuntimeError …
            raise AuditInputError(f"{path}: not a readable PyTorch file ({describe(exc)})") from None
        try:
            handle.seek(0)
            names = torch.serialization.get_unsafe_globals_in_checkpoint(handle)
            with torch.serialization.safe_globals([_stand_in(name) for name in names]):
                return torch_load_weights_only(handle), names
        except Exception as exc:
            raise AuditInputError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({describe(exc)})"
            ) from None


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _what(value: Any) -> str:
    return getattr(type(value), "original", type(value).__name__)


def state_dict_in(saved: Any, state_key: str | None, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict the file holds: the file itself, the entry ``state_key`` names (``a/b`` for
    nested entries), or else the one of ``state_dict``, ``model_state_dict``, ``model`` it has."""
    if state_key is not None:
        node = saved
        for part in state_key.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise AuditInputError(f"{path}: has no entry {state_key!r}")
            node = node[part]
        if not _is_state_dict(node):
            raise AuditInputError(f"{path}: entry {state_key!r} is not a dict of tensors")
        return dict(node), state_key
    if _is_state_dict(saved):
        return dict(saved), None
    if not isinstance(saved, Mapping):
        raise AuditInputError(
            f"{path}: holds a {_what(saved)}, not a state dict (a whole pickled module needs its code to load: "
            "save its state_dict() instead)"
        )
    found = [key for key in STATE_KEYS if _is_state_dict(saved.get(key))]
    if len(found) != 1:
        keys = ", ".join(str(k) for k in list(saved)[:8])
        problem = f"several state dicts ({', '.join(found)})" if found else f"no state dict among its entries ({keys})"
        raise AuditInputError(f"{path}: {problem}: name the one to read with --state-key")
    return dict(saved[found[0]]), found[0]


def read_torch_state(path: Path, state_key: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of a ``.pt``/``.pth``/``.ckpt`` file, and what the certificate records about the file."""
    if not path.is_file():
        raise AuditInputError(f"{path}: no such model file")
    saved, stand_ins = load_weights_only(path)
    tensors, used_key = state_dict_in(saved, state_key, path)
    details: dict[str, Any] = {"format": "torch", "state_key": used_key, "inert_stand_ins": stand_ins}
    if isinstance(saved, Mapping) and "pytorch-lightning_version" in saved:
        details["format"] = "lightning"
        details["lightning"] = {
            key: value
            for key in ("pytorch-lightning_version", "epoch", "global_step")
            if isinstance(value := saved.get(key), (str, int)) and not isinstance(value, bool)
        }
    return tensors, details
