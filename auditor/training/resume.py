"""``X.resume.pt``: where an unfinished training run stands, so that ``--resume`` continues it.

Written (atomically, by rank 0) after every epoch that is not the run's last, and removed when
the run has written ``X.safetensors``: the weights, Adam's state, the generators' states, the
monitor's rows so far, and a fingerprint of the run (every hyper-parameter, the data's and the
teacher's sha256, the ``--init`` checkpoint's). On a CPU the resumed run is the uninterrupted
run: the same checkpoint bytes. The released ``X.safetensors`` format does not change.

The file is read with ``torch.load(weights_only=True)`` (tensors, numbers, strings and plain
containers; no object is ever unpickled), and everything in it is checked before use: a file
from another run, a damaged one, or one whose tensors do not fit the model is refused with one line.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AuditInputError
from ..sources.atomic import atomic_write_bytes
from ..sources.checkpoint import load_state_into
from ..sources.regular_files import open_input
from ..sources.torch_zip import check_torch_zip, torch_load_weights_only
from .history import CSV_COLUMNS, PHASES

RESUME_FORMAT = "vae-audit-resume/1"
ADAM_STATE_KEYS = {"step", "exp_avg", "exp_avg_sq"}


def resume_path(out: Path) -> Path:
    """``X.safetensors`` → ``X.resume.pt`` beside it."""
    return Path(out).with_suffix(".resume.pt")


@dataclass
class ResumePoint:
    """A run after ``epoch`` completed epochs (prefit and ELBO epochs counted together)."""

    epoch: int
    history: list[dict]  # the monitor's rows 0 … epoch
    model: dict[str, torch.Tensor]
    optimiser: dict
    generators: dict[str, torch.Tensor]  # "order" (the CPU generator), "noise" (CUDA runs only)
    path: Path | None = None  # the file it was read from (named in errors)


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_resume(path: Path, point: ResumePoint, fingerprint: dict) -> None:
    payload = {
        "format": RESUME_FORMAT,
        # JSON text: compared exactly on resume, and the history keeps NaN and None as they were.
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "epoch": point.epoch,
        "history": json.dumps(point.history),
        "model": _to_cpu(point.model),
        "optimiser": _to_cpu(point.optimiser),
        "generators": _to_cpu(point.generators),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_resume(path: Path, fingerprint: dict, total_epochs: int) -> ResumePoint:
    """The run's state in ``path``, checked against this run's ``fingerprint`` and epoch count."""
    # a zip of stored records first, as teachers and checkpoints: the file sits in the output
    # folder, where anyone who can write there could leave one that makes torch allocate at will
    with open_input(path) as handle:
        check_torch_zip(handle, path, "resume file")
        try:
            payload = torch_load_weights_only(handle)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise AuditInputError(f"{path}: not a readable resume file ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise AuditInputError(f"{path}: not a vae-audit resume file (expected format {RESUME_FORMAT!r})")
    _check_fingerprint(path, payload.get("fingerprint"), fingerprint)
    epoch = payload.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 1 <= epoch < total_epochs):
        raise AuditInputError(
            f"{path}: epoch {epoch!r} is not an unfinished epoch of this run (1 … {total_epochs - 1})"
        )
    history = _checked_history(path, payload.get("history"), epoch)
    model, optimiser, generators = payload.get("model"), payload.get("optimiser"), payload.get("generators")
    if not (isinstance(model, dict) and all(isinstance(v, torch.Tensor) for v in model.values())):
        raise AuditInputError(f"{path}: 'model' must map tensor names to tensors")
    if not isinstance(optimiser, dict) or not isinstance(generators, dict):
        raise AuditInputError(f"{path}: 'optimiser' and 'generators' must be dicts")
    return ResumePoint(epoch, history, model, optimiser, generators, Path(path))


def _check_fingerprint(path: Path, stored, expected: dict) -> None:
    try:
        found = json.loads(stored) if isinstance(stored, str) else None
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, dict):
        raise AuditInputError(f"{path}: the resume file has no readable fingerprint of its run")
    expected = json.loads(json.dumps(expected, sort_keys=True))
    if found == expected:
        return
    differing = sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))
    if "config" in differing and isinstance(found.get("config"), dict):
        config, mine = found["config"], expected["config"]
        differing.remove("config")
        differing += sorted(f"--{k.replace('_', '-')}" for k in set(config) | set(mine) if config.get(k) != mine.get(k))
    raise AuditInputError(
        f"{path} was written by a different run (it differs in: {', '.join(differing)}); "
        "remove it, or rerun with the arguments it was written with"
    )


def _checked_history(path: Path, text, epoch: int) -> list[dict]:
    try:
        history = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        history = None
    rows = history if isinstance(history, list) else []
    ok = len(rows) == epoch + 1
    for i, row in enumerate(rows if ok else []):
        ok = (
            isinstance(row, dict)
            and tuple(row) == CSV_COLUMNS
            and row["epoch"] == i
            and row["phase"] in PHASES
            and all(v is None or isinstance(v, (int, float)) for k, v in row.items() if k != "phase")
        )
        if not ok:
            break
    if not ok:
        raise AuditInputError(f"{path}: the monitor history is not {epoch + 1} rows of the monitor's columns")
    return rows


def restore(
    point: ResumePoint, model: nn.Module, optimiser: torch.optim.Optimizer, lr: float, generators: dict
) -> None:
    """Put the run back where ``point`` left it: weights, Adam's state and the generators' states."""
    path = point.path or Path("resume file")
    load_state_into(model, point.model, path)
    _restore_optimiser(path, point, optimiser, lr)
    _restore_generators(path, point, generators)


def _restore_optimiser(path: Path, point: ResumePoint, optimiser: torch.optim.Optimizer, lr: float) -> None:
    """Adam's state, checked tensor by tensor against the parameters before it is loaded."""
    params = [p for group in optimiser.param_groups for p in group["params"]]
    state, groups = point.optimiser.get("state"), point.optimiser.get("param_groups")
    if not (
        isinstance(groups, list)
        and len(groups) == 1
        and isinstance(groups[0], dict)
        and groups[0].get("params") == list(range(len(params)))
        and groups[0].get("lr") == lr
    ):
        raise AuditInputError(f"{path}: the optimiser's parameter groups do not fit this model and --lr")
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        raise AuditInputError(f"{path}: the optimiser's state does not fit this model")
    for index, entry in state.items():
        shape = params[index].shape
        if not (isinstance(entry, dict) and set(entry) == ADAM_STATE_KEYS):
            raise AuditInputError(f"{path}: optimiser state {index} is not Adam's (step, exp_avg, exp_avg_sq)")
        step, avg, avg_sq = entry["step"], entry["exp_avg"], entry["exp_avg_sq"]
        if not (
            isinstance(step, torch.Tensor)
            and step.numel() == 1
            and step.is_floating_point()
            and math.isfinite(float(step))
            and float(step) >= 1
            and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == shape for t in (avg, avg_sq)
            )
            and bool(torch.isfinite(avg).all())
            and bool((avg_sq >= 0).all() and torch.isfinite(avg_sq).all())
        ):
            raise AuditInputError(
                f"{path}: optimiser state {index} does not fit parameter {index} of shape {list(shape)}"
            )
    optimiser.load_state_dict(point.optimiser)


def _restore_generators(path: Path, point: ResumePoint, generators: dict[str, torch.Generator]) -> None:
    """Each generator's state, checked to be one of its kind (a byte tensor of its length)."""
    if set(point.generators) != set(generators):
        raise AuditInputError(
            f"{path}: the file holds generators {sorted(point.generators)}, this run needs {sorted(generators)}"
        )
    for name, generator in generators.items():
        stored, own = point.generators[name], generator.get_state()
        if not (isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.shape == own.shape):
            raise AuditInputError(f"{path}: the state of generator {name!r} is not a generator state of this kind")
        try:
            generator.set_state(stored)
        except RuntimeError:
            raise AuditInputError(f"{path}: the state of generator {name!r} is not a valid generator state") from None
