"""Run the `audit` CLI in-process and capture (exit code, stdout, stderr)."""

from __future__ import annotations

import pytest

from auditor.cli.app import main


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err
