"""The seam for report formats: each format is one class with a name, a file name and ``render``.

A renderer only reads a checked certificate dict (:mod:`auditor.certificate.document`) and returns
the file's text; it never writes files or decides anything. :mod:`auditor.reports.writer` holds
the registry of formats and writes the files of one run together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class ReportFormat(ABC):
    name: str  # as given to --format
    filename: str  # written into the report folder

    @abstractmethod
    def render(self, cert: dict) -> str:
        """The file's text for a checked certificate dict."""

    def render_with_inputs(self, cert: dict, inputs_base: Path | None) -> str:
        """The file's text where the format reads a file the certificate names (HTML's training
        curve), its relative paths starting from ``inputs_base`` (None: the current folder)."""
        return self.render(cert)
