"""The audit pass: request → sources → plan → device stream → certificate state → numbers.

:func:`auditor.audit.pipeline.run_audit` is the entry point; ``audit verify``'s checks are in
:mod:`auditor.audit.verify`.
"""

from .._compat import package_attribute


def __getattr__(name: str):
    return package_attribute(__name__, name)  # the names of the old module auditor/audit.py
