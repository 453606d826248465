"""What a preset is: the protocol of one paper's experiment, as data.

A :class:`Preset` fixes the data it expects, the settings every row starts from, the teacher search
(grid, seeds, fit rows), how many teachers there are and which rows train against which, the
rows themselves, and the default seeds and epochs. :func:`apply_overrides` lets ``--set KEY=VALUE``
change a setting or a search parameter for one invocation (recorded in ``preset.json``); the rows'
own settings (a KL weight, a method) are what the table is about and are not overridable.
Every default and its reason is in docs/reproduce.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import AuditInputError
from ...teachers.search import DEFAULT_CLASSES, DEFAULT_HOLDOUT_EVERY, DEFAULT_RANKS, DEFAULT_TEMPERATURES
from ..reproduce import Row

# `audit teacher search`'s temperatures and three larger ones: images of hundreds or thousands of
# pixels give sharper GMM posteriors than digits, and a larger τ only adds candidates (τ rescales
# the log-joint, so it costs no fit), which the search then compares on held-out I_T as always.
PRESET_TEMPERATURES = (*DEFAULT_TEMPERATURES, 32.0, 64.0, 128.0)


@dataclass(frozen=True)
class TeacherSearch:
    """How each teacher is found: ``audit teacher search`` on rows of the training split."""

    ranks: tuple[int, ...] = DEFAULT_RANKS
    classes: tuple[int, ...] = DEFAULT_CLASSES
    temperatures: tuple[float, ...] = PRESET_TEMPERATURES
    holdout_every: int = DEFAULT_HOLDOUT_EVERY
    n_init: int = 2
    limit: int | None = None  # at most this many rows per teacher (memory: rows × D float64 values)


@dataclass(frozen=True)
class Preset:
    name: str
    paper: str  # the experiment it encodes
    sample_shape: tuple[int, ...]  # what --data must hold, e.g. (3, 32, 32)
    settings: dict  # TrainConfig fields every row starts from
    epochs: int
    seeds: tuple[int, ...]
    rows: tuple[Row, ...]
    search: TeacherSearch = field(default_factory=TeacherSearch)
    # "per-seed": one teacher searched per training seed (search seed = training seed) on the whole
    # training split; "fixed": ``num_teachers`` teachers shared by every seed, teacher t searched
    # with seed t on the rows j with j % num_teachers == t (disjoint subsets when there are several).
    teachers: str = "fixed"
    num_teachers: int = 1


# What --set may change: the shared settings (TrainConfig fields) and the teacher search.
SETTINGS = {
    "batch_size": int,
    "lr": float,
    "latent_dim": int,
    "channels": tuple,
    "hidden": tuple,
    "beta": float,
    "activation": str,
    "likelihood": str,
    "threads": int,
    "prefit_epochs": int,
    "free_bits": float,
    "anneal_epochs": float,
    "cycles": int,
    "cycle_ratio": float,
}
SEARCH = {"ranks": tuple, "classes": tuple, "temperatures": tuple, "holdout_every": int, "n_init": int, "limit": int}


def _parse(key: str, kind: type, text: str, item: type = int):
    try:
        if kind is tuple:
            values = tuple(item(part) for part in text.split(",") if part.strip())
            if not values:
                raise ValueError
            return values
        return kind(text)
    except ValueError:
        raise AuditInputError(f"--set {key}={text}: not a valid {'list' if kind is tuple else kind.__name__}") from None


def apply_overrides(preset: Preset, assignments: list[str]) -> tuple[Preset, dict]:
    """The preset with each ``KEY=VALUE`` applied (``search.KEY=VALUE`` for the teacher search),
    and the overrides as parsed (for ``preset.json``)."""
    settings, search, parsed = dict(preset.settings), dict[str, Any](), dict[str, Any]()
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise AuditInputError(f"--set {assignment!r}: write KEY=VALUE")
        name = key.removeprefix("search.")
        table = SEARCH if key.startswith("search.") else SETTINGS
        if name not in table:
            known = ", ".join([*SETTINGS, *(f"search.{k}" for k in SEARCH)])
            raise AuditInputError(f"--set {key}: not a preset setting (known: {known})")
        value = _parse(key, table[name], text.strip(), float if name == "temperatures" else int)
        (search if table is SEARCH else settings)[name] = value
        parsed[key] = value
    return replace(preset, settings=settings, search=replace(preset.search, **search)), parsed
