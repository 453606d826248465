"""The import paths of the flat 0.1 layout keep working for this release, with a DeprecationWarning.

``data/old_public_names.json`` lists every public name each old module defined, read off the old
modules before they moved.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import pytest

import auditor

OLD_NAMES = json.loads((Path(__file__).parent / "data" / "old_public_names.json").read_text())


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_every_public_name_of_an_old_module_is_still_importable(old):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
        missing = [name for name in OLD_NAMES[old] if not hasattr(module, name)]
    assert missing == []


def test_an_old_path_gives_the_same_object_and_says_where_it_moved():
    from auditor.training.monitor import CertificateMonitor

    with pytest.warns(DeprecationWarning, match="auditor.training.monitor.CertificateMonitor"):
        from auditor.monitor import CertificateMonitor as old
    assert old is CertificateMonitor


def test_old_modules_that_became_packages_forward_only_their_old_names():
    from auditor.audit.pipeline import run_audit
    from auditor.certificate.verdict import decide

    with pytest.warns(DeprecationWarning):
        from auditor.audit import run_audit as old_run_audit
    with pytest.warns(DeprecationWarning):
        from auditor.certificate import decide as old_decide
    assert old_run_audit is run_audit and old_decide is decide
    with pytest.raises(AttributeError):
        auditor.audit.no_such_name  # noqa: B018


def test_public_api_from_the_package_itself():
    from auditor.certificate.design import design_table
    from auditor.training.monitor import CertificateMonitor

    assert auditor.CertificateMonitor is CertificateMonitor and auditor.design_table is design_table
    assert set(auditor.PUBLIC_API) <= set(auditor.__all__)
    with pytest.raises(AttributeError):
        auditor.no_such_name  # noqa: B018
