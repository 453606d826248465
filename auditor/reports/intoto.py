"""``certificate.intoto.json``: the certificate as an in-toto Statement v1, for a release pipeline to
sign (the document itself: :mod:`auditor.certificate.attestation`)."""

from __future__ import annotations

import json

from ..certificate.attestation import statement
from .interface import ReportFormat


class IntotoReport(ReportFormat):
    name, filename = "intoto", "certificate.intoto.json"

    def render(self, cert: dict) -> str:
        return json.dumps(statement(cert), indent=2) + "\n"
