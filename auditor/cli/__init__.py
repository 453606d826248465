"""The ``audit`` command line (:mod:`auditor.cli.app`): one typer app, one module per command."""

from .._compat import package_attribute


def __getattr__(name: str):
    return package_attribute(__name__, name)  # the names of the old module auditor/cli.py
