"""``--latents FILE``: precomputed means — array ``mu`` (N×d), optional ``logvar`` — from any framework.

A ``.npy`` file holds a single array: the means, never log-variances."""

from __future__ import annotations

from pathlib import Path

from ...errors import AuditInputError
from ..arrays import first_rows, open_array
from ..hashing import file_record
from .interface import Encoder, ModelRequest, ModelSource


class Latents(ModelSource):
    needs_data = False

    @staticmethod
    def wanted(request: ModelRequest) -> bool:
        return request.latents is not None

    def open(self, request: ModelRequest) -> Encoder:
        assert request.latents is not None  # the registry opens a source only for a request it wanted
        path = Path(request.latents)
        mu = open_array(path, "mu")
        if len(mu.shape) != 2:
            raise AuditInputError(f"{path}: 'mu' must be an N×d array, found shape {mu.shape}")
        inputs = [file_record("latents", path)]
        rows = {"mu": first_rows(mu, request.limit)}
        # A .npy file holds one array, which open_array hands out under any name: it is μ, and
        # the file has no log-variances (reading it as both once computed the prior KL from μ).
        logvar = open_array(path, "logvar", required=False) if path.suffix.lower() != ".npy" else None
        if logvar is not None:
            if tuple(logvar.shape) != tuple(mu.shape):
                raise AuditInputError(f"{path}: 'logvar' has shape {logvar.shape}, 'mu' has {mu.shape}")
            rows["logvar"] = first_rows(logvar, request.limit)
        return Encoder(record={"source": "latents", "path": str(path)}, inputs=inputs, rows=rows)
