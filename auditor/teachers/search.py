"""Choosing the teacher: a grid over PCA rank, K and τ, scored on held-out data.

Every candidate is fitted on ``x_fit`` and scored on ``x_holdout`` by its teacher information
I_T (what the certificate can at most certify) and by E_T, which fixes the prior cost of the
analytic code that reproduces the teacher, ((K−1)/(2Kβ²))·E_T (see :mod:`auditor.certificate.design`).
The winner has the largest held-out I_T among the candidates within the energy budget.

The held-out rows come from the *training* split (``holdout_split``: every M-th row), never
from the test split that ``audit certify`` is run on, so the teacher is not selected on the
data it later certifies on. The work is what the grid needs and no more: one PCA per rank, one
GMM per (rank, K), and, since τ only divides the log-joint, one evaluation of the log-joint
per (rank, K) on the held-out rows, with a softmax per τ.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..certificate.design import (
    DEFAULT_BETA,
    DEFAULT_ENERGY_BUDGET,
    PROB_FLOOR,
    check_beta,
    check_energy_budget,
    prior_cost,
    recommend_beta,
    teacher_energy,
    teacher_information,
)
from ..errors import AuditInputError
from .fit import (
    check_teacher_shape,
    check_temperature,
    fit_gmm_on_scores,
    fit_pca,
    posteriors_at_temperatures,
    with_temperature,
)
from .pca_gmm import PcaGmmTeacher

DEFAULT_RANKS = (8, 16, 32)
DEFAULT_CLASSES = (5, 10, 15)
DEFAULT_TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0)
DEFAULT_HOLDOUT_EVERY = 5
COLUMNS = ["rank", "K", "temperature", "I_T", "E_T", "energy", "within_budget", "converged", "chosen"]


def holdout_split(x: np.ndarray, every: int = DEFAULT_HOLDOUT_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): row j is held out when j % every == every − 1."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise AuditInputError(f"--holdout-every must be a whole number >= 2, got {every!r}")
    held = np.arange(len(x)) % every == every - 1
    if not held.any() or held.all():
        raise AuditInputError(f"{len(x)} samples leave no held-out rows with --holdout-every {every}")
    return x[~held], x[held]


@dataclass
class SearchResult:
    table: pd.DataFrame
    teachers: list[PcaGmmTeacher]  # one per table row, same order

    @property
    def chosen(self) -> PcaGmmTeacher:
        return self.teachers[int(np.flatnonzero(self.table["chosen"].to_numpy())[0])]


def _checked_grid(name: str, values: Sequence, check) -> list:
    values = list(dict.fromkeys(values))  # unique, in the order given
    if not values:
        raise AuditInputError(f"the search grid is empty: give at least one value for {name}")
    for value in values:
        check(value)
    return values


def score_candidates(
    x_fit: np.ndarray,
    x_holdout: np.ndarray,
    ranks: Sequence[int],
    classes: Sequence[int],
    temperatures: Sequence[float],
    beta: float = DEFAULT_BETA,
    energy_budget: float = DEFAULT_ENERGY_BUDGET,
    seed: int = 0,
    n_init: int = 2,
) -> SearchResult:
    """Fit and score every (rank, K, τ); mark the chosen row (none when nothing fits the budget)."""
    x_fit = np.asarray(x_fit, dtype=np.float64).reshape(len(x_fit), -1)
    x_holdout = np.asarray(x_holdout, dtype=np.float64).reshape(len(x_holdout), -1)
    n, D = x_fit.shape
    if len(x_holdout) == 0:
        raise AuditInputError("the held-out set is empty: the search needs held-out samples to score on")
    if x_holdout.shape[1] != D:
        raise AuditInputError(f"held-out samples have {x_holdout.shape[1]} values, the fit samples {D}")
    ranks = _checked_grid("--ranks", ranks, lambda r: check_teacher_shape(r, 2, n, D))
    classes = _checked_grid("--classes", classes, lambda k: check_teacher_shape(1, k, n, D))
    temperatures = [float(t) for t in _checked_grid("--temperatures", temperatures, check_temperature)]
    beta, energy_budget = check_beta(beta), check_energy_budget(energy_budget)

    rows, teachers = [], []
    for rank in ranks:
        pca = fit_pca(x_fit, rank, seed)
        scores = pca.transform(x_fit)
        for K in classes:
            base, converged = fit_gmm_on_scores(pca, scores, K, 1.0, seed, n_init)
            for tau, p in zip(temperatures, posteriors_at_temperatures(base, x_holdout, temperatures)):
                teacher = with_temperature(base, tau)
                e_t = teacher_energy(p)
                energy = prior_cost(e_t, K, beta)
                rows.append(
                    {
                        "rank": rank,
                        "K": K,
                        "temperature": tau,
                        "I_T": teacher_information(p),
                        "E_T": e_t,
                        "energy": energy,
                        "within_budget": energy <= energy_budget,
                        "converged": converged,
                        "chosen": False,
                    }
                )
                teachers.append(teacher)
    table = pd.DataFrame(rows, columns=COLUMNS)
    fits = table[table["within_budget"]]
    if len(fits):
        # Largest I_T; ties to the cheaper energy, then to the earlier (smaller) grid point.
        best = fits.sort_values(["I_T", "energy"], ascending=[False, True], kind="stable").index[0]
        table.loc[best, "chosen"] = True
    return SearchResult(table, teachers)


def require_choice(result: SearchResult, beta: float, energy_budget: float) -> PcaGmmTeacher:
    """The chosen teacher, or an AuditInputError saying how to make a candidate fit the budget."""
    table = result.table
    if table["chosen"].any():
        return result.chosen
    # pandas-stubs type idxmin's label as Hashable, which their .loc does not accept.
    cheapest = table.loc[table["energy"].idxmin()]  # type: ignore[call-overload]
    need = recommend_beta(float(cheapest["E_T"]), int(cheapest["K"]), energy_budget)
    raise AuditInputError(
        f"no candidate fits --energy-budget {energy_budget:g} nats at --beta {beta:g}: the cheapest "
        f"(rank {int(cheapest['rank'])}, K {int(cheapest['K'])}, τ {cheapest['temperature']:g}) costs "
        f"{cheapest['energy']:.3g} nats; raise the budget, use --beta >= {need:.3g}, or add larger temperatures"
    )


def search_teachers(
    x_fit: np.ndarray,
    x_holdout: np.ndarray,
    ranks: Sequence[int] = DEFAULT_RANKS,
    classes: Sequence[int] = DEFAULT_CLASSES,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    beta: float = DEFAULT_BETA,
    energy_budget: float = DEFAULT_ENERGY_BUDGET,
    seed: int = 0,
    n_init: int = 2,
) -> tuple[PcaGmmTeacher, pd.DataFrame]:
    """The teacher with the largest held-out I_T whose analytic code's prior cost
    ((K−1)/(2Kβ²))·E_T fits ``energy_budget``, and the table of all candidates.

    The teacher returned is the one scored: fitted on ``x_fit`` only.
    """
    result = score_candidates(x_fit, x_holdout, ranks, classes, temperatures, beta, energy_budget, seed, n_init)
    return require_choice(result, beta, energy_budget), result.table


def search_record(
    table: pd.DataFrame,
    *,
    beta: float,
    energy_budget: float,
    seed: int,
    n_init: int,
    data: dict,
    teacher_sha256: str | None = None,
) -> dict:
    """The provenance written beside the chosen teacher (``teacher.search.json``)."""
    chosen = table[table["chosen"]]
    return {
        "schema": "vae-audit-teacher-search/1",
        "data": data,
        "selection": "largest held-out I_T subject to ((K-1)/(2K beta^2)) E_T <= energy_budget",
        "beta": beta,
        "energy_budget": energy_budget,
        "prob_floor": PROB_FLOOR,
        "seed": seed,
        "n_init": n_init,
        "chosen": _json_row(chosen.iloc[0]) if len(chosen) else None,
        "teacher_sha256": teacher_sha256,
        "candidates": [_json_row(row) for _, row in table.iterrows()],
    }


def _json_row(row: pd.Series) -> dict:
    out: dict[Hashable, bool | int | float | None] = {}  # keys: the column names
    for key, value in row.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        else:
            value = float(value)
            out[key] = value if math.isfinite(value) else None
    return out


def sidecar_path(teacher_path: Path, kind: str) -> Path:
    """teacher.pt → teacher.<kind>.json (beside it)."""
    return teacher_path.with_name(f"{teacher_path.stem if teacher_path.suffix else teacher_path.name}.{kind}.json")


def search_sidecar_path(teacher_path: Path) -> Path:
    """teacher.pt → teacher.search.json (beside it)."""
    return sidecar_path(teacher_path, "search")
