"""Running a preset: search its teachers, train and certify every (row, seed), write the run folder.

    <out>/preset.json                      the preset as run: settings, search, rows, seeds, epochs, overrides
    <out>/teachers/teacher-<id>.pt         each searched teacher, with <stem>.search.json (its candidates)
    <out>/models/<row>-s<seed>.safetensors every checkpoint, its monitor .csv (and .resume.pt while unfinished)
    <out>/runs.csv                         one line per (row, seed), rewritten after every run
    <out>/table.csv, table.md              mean ± std over seeds; the probe's columns in their own table

Teacher ids: ``s<seed>`` for a teacher searched per seed, ``t<t>`` for a preset's fixed teachers.
With ``resume``, teachers already searched with the same request are kept, finished runs are kept,
and an unfinished run continues from its ``.resume.pt`` (:mod:`auditor.training.run`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..._version import __version__
from ...certificate.design import DEFAULT_ENERGY_BUDGET
from ...errors import AuditInputError
from ...sources.atomic import atomic_write_text
from ...sources.datasets.dataset import Dataset
from ...sources.datasets.features import unit_features
from ...sources.datasets.options import DataOptions
from ...sources.hashing import sha256_file
from ...sources.teachers.files import save_searched_teacher
from ...teachers.fit import check_teacher_shape, check_temperature
from ...teachers.search import holdout_split, score_candidates, search_sidecar_path
from ..config import DEFAULT_BETA, TrainConfig, resolve_config
from ..device import check_precision, training_device
from ..reproduce import Row, RunOptions, TeacherRun, run_seed, select_rows, teacher_on_test, write_tables
from ..run import inputs_record, load_training_data, read_split
from .base import Preset, TeacherSearch, apply_overrides


def _check_rows(preset: Preset, rows: Sequence[Row], options: RunOptions) -> None:
    """Every row's settings resolved now, so that a bad --set fails before anything is written."""
    largest_k = max(preset.search.classes)
    for row in rows:
        if row.protocol is None:
            cfg = TrainConfig(
                method=row.method, epochs=options.epochs, device=options.device, **{**preset.settings, **row.settings}
            )
            latent_dim = resolve_config(cfg, None).latent_dim
            if latent_dim is not None and latent_dim < largest_k - 1:
                raise AuditInputError(
                    f"latent_dim {latent_dim} is too small for the search's largest K={largest_k} "
                    f"(the witness needs d >= K - 1): raise latent_dim or lower search.classes"
                )


def _check_search(preset: Preset, num_samples: int, input_dim: int) -> None:
    """The search grid against the rows each teacher will be fitted on, before anything is written."""
    search = preset.search
    if search.limit is not None and search.limit < 1:
        raise AuditInputError(f"search.limit must be >= 1, got {search.limit}")
    if search.n_init < 1:
        raise AuditInputError(f"search.n_init (GMM restarts) must be >= 1, got {search.n_init}")
    for teacher in range(1 if preset.teachers == "per-seed" else preset.num_teachers):
        fit_rows, _ = teacher_fit_rows(preset, teacher, num_samples)
        fitted, _ = holdout_split(fit_rows, search.holdout_every)
        for rank in search.ranks:
            check_teacher_shape(rank, 2, len(fitted), input_dim)
        for k in search.classes:
            check_teacher_shape(1, k, len(fitted), input_dim)
    for temperature in search.temperatures:
        check_temperature(temperature)


def teacher_fit_rows(preset: Preset, teacher: int, num_samples: int) -> tuple[np.ndarray, str]:
    """The training rows teacher ``teacher`` is searched on, and their description."""
    if preset.teachers == "per-seed" or preset.num_teachers == 1:
        rows, where = np.arange(num_samples), "every row of the training split"
    else:
        n = preset.num_teachers
        rows, where = np.flatnonzero(np.arange(num_samples) % n == teacher), f"rows j with j % {n} == {teacher}"
    limit = preset.search.limit
    if limit is not None and len(rows) > limit:
        rows, where = rows[:limit], f"the first {limit} of the {where}"
    return rows, where


def search_teacher(
    x_train: torch.Tensor,
    dataset: Dataset,
    rows: np.ndarray,
    where: str,
    search: TeacherSearch,
    seed: int,
    beta: float,
    path: Path,
    resume: bool,
) -> Path:
    """``audit teacher search`` on the given training rows; the teacher and its ``.search.json``."""
    request = {"seed": seed, "beta": beta, "rows": where, "search": asdict(search), "data": dataset.spec}
    sidecar = search_sidecar_path(path)
    if resume and path.is_file() and sidecar.is_file():
        try:
            kept = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            kept = {}
        if kept.get("request") == json.loads(json.dumps(request)) and kept.get("teacher_sha256") == sha256_file(path):
            return path
    features = unit_features(x_train[torch.from_numpy(rows)].numpy(), dataset.spec)
    x_fit, x_holdout = holdout_split(features, search.holdout_every)
    del features
    grid = (search.ranks, search.classes, search.temperatures)
    result = score_candidates(x_fit, x_holdout, *grid, beta, DEFAULT_ENERGY_BUDGET, seed, search.n_init)
    data = {
        "spec": dataset.spec,
        "split": "train",
        "rows": where,
        "holdout": f"row j of those is held out when j % {search.holdout_every} == {search.holdout_every - 1}",
        "num_fit": len(x_fit),
        "num_holdout": len(x_holdout),
        **inputs_record(dataset.inputs),
    }
    save_searched_teacher(
        result,
        path,
        beta=beta,
        energy_budget=DEFAULT_ENERGY_BUDGET,
        seed=seed,
        n_init=search.n_init,
        data=data,
        extra={"request": request},
    )
    return path


def reproduce_preset(
    preset: Preset,
    data: str,
    out: Path,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    rows: Sequence[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    overrides: Sequence[str] = (),
    resume: bool = False,
    on_run: Callable[[str], None] | None = None,
    reading: DataOptions | None = None,
) -> pd.DataFrame:
    """Run ``preset`` on ``data`` into the folder ``out`` (module docstring); returns the summary table."""
    preset, parsed = apply_overrides(preset, list(overrides))
    seeds = list(preset.seeds if seeds is None else seeds)
    epochs = preset.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise AuditInputError(f"--epochs must be a positive integer, got {epochs}")
    chosen = select_rows(rows, preset.rows)
    options = RunOptions(
        epochs=epochs,
        settings=preset.settings,
        device=training_device(device).type,
        precision=check_precision(precision),
        resume=resume,
        probe=True,
        reading=reading,
    )
    _check_rows(preset, chosen, options)
    dataset, x_train = read_split(data, "train", reading)
    if dataset.sample_shape != preset.sample_shape:
        raise AuditInputError(
            f"--preset {preset.name} expects samples of shape {preset.sample_shape}; "
            f"{data!r} holds {dataset.sample_shape}"
        )
    _check_search(preset, dataset.num_samples, math.prod(dataset.sample_shape))
    test, x_test = read_split(data, "test", reading)
    out = Path(out)
    description = {
        **asdict(preset),
        "rows": [asdict(row) for row in chosen],
        "seeds": seeds,
        "epochs": epochs,
        "overrides": parsed,
        "device": options.device,
        "precision": options.precision,
        "data": data,
        "tool_version": __version__,
    }
    atomic_write_text(out / "preset.json", json.dumps(description, indent=2) + "\n")
    beta = float(preset.settings.get("beta", DEFAULT_BETA))
    runs: dict[str, TeacherRun] = {}

    def teacher(index: int, seed: int) -> TeacherRun:
        name = f"s{seed}" if preset.teachers == "per-seed" else f"t{index}"
        if name not in runs:
            fit_rows, where = teacher_fit_rows(preset, index, dataset.num_samples)
            search_seed = seed if preset.teachers == "per-seed" else index
            path = out / "teachers" / f"teacher-{name}.pt"
            search_teacher(x_train, dataset, fit_rows, where, preset.search, search_seed, beta, path, resume)
            inputs = load_training_data(data, "train", path, reading, samples=(dataset, x_train))
            runs[name] = TeacherRun(path, inputs, teacher_on_test(path, x_test, test.sample_shape))
        return runs[name]

    records: list[dict] = []

    def on_record(record: dict) -> None:
        records.append(record)
        atomic_write_text(out / "runs.csv", pd.DataFrame.from_records(records).to_csv(index=False))

    for seed in seeds:
        teachers = {index: teacher(index, seed) for index in sorted({row.teacher for row in chosen})}
        run_seed(data, seed, teachers, chosen, x_test, out / "models", options, on_run, on_record)
    return write_tables(pd.DataFrame.from_records(records), out)
