"""The example CI pipelines (examples/github-actions.yml and gitlab-ci.yml) certify, compare against
the last release and attest, with `audit` command lines that the real command-line parser accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from auditor.certificate.attestation import PREDICATE_TYPE
from auditor.cli.app import app
from auditor.reports.writer import parse_formats

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"github": ROOT / "examples" / "github-actions.yml", "gitlab": ROOT / "examples" / "gitlab-ci.yml"}
COMMAND_START = {";", "|", "||", "&&", "then", "else", "do", "(", "!"}


def shell_texts(node) -> list[str]:
    """Every shell script in a workflow: GitHub steps' ``run`` and GitLab jobs' ``script`` lines."""
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                out.append(value)
            elif key == "script":
                out += [line for line in value if isinstance(line, str)]
            else:
                out += shell_texts(value)
        return out
    if isinstance(node, list):
        return [text for item in node for text in shell_texts(item)]
    return []


def commands(text: str, program: str) -> list[list[str]]:
    """The argument lists of every ``program`` command in a shell text (up to a pipe, redirect or ;)."""
    found = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True  # words end at whitespace or a shell operator only
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token == program and (i == 0 or tokens[i - 1] in COMMAND_START):
                args = []
                for arg in tokens[i + 1 :]:
                    if arg and all(c in ";|&<>()" for c in arg):
                        break
                    args.append(arg)
                found.append(args)
    return found


def steps_using(node, action: str) -> list[dict]:
    if isinstance(node, dict):
        here = [node] if str(node.get("uses", "")).startswith(action + "@") else []
        return here + [s for value in node.values() for s in steps_using(value, action)]
    if isinstance(node, list):
        return [s for item in node for s in steps_using(item, action)]
    return []


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def pipeline(request):
    workflow = yaml.safe_load(EXAMPLES[request.param].read_text())
    audits = [args for text in shell_texts(workflow) for args in commands(text, "audit")]
    return request.param, workflow, audits


def test_every_audit_command_line_parses(pipeline):
    _, workflow, audits = pipeline
    group = get_command(app)
    assert audits
    for args in audits:
        name, *rest = args
        group.commands[name].make_context(
            name, list(rest)
        )  # raises on an unknown flag, a bad value, a missing argument
        if name == "certify":
            parse_formats(option(rest, "--format"))


def test_certify_then_compare_then_attest_then_verify(pipeline):
    kind, workflow, audits = pipeline
    by_name = {args[0]: args[1:] for args in audits}
    assert list(by_name) == ["certify", "compare", "verify"]  # in this order
    certify = by_name["certify"]
    assert "intoto" in option(certify, "--format").split(",")
    out, model = Path(option(certify, "--out")), option(certify, "--model")
    assert by_name["compare"][1] == str(out / "certificate.json")  # NEW is this release's certificate
    assert "--max-margin-drop" in by_name["compare"] and "--max-lcb-drop" in by_name["compare"]
    assert by_name["verify"] == [str(out / "certificate.intoto.json")]
    if kind == "github":
        (attest,) = steps_using(workflow, "actions/attest")
        assert attest["with"] == {
            "subject-path": model,
            "predicate-type": PREDICATE_TYPE,
            "predicate-path": str(out / "certificate.json"),
        }
    else:
        signs = [args for text in shell_texts(workflow) for args in commands(text, "cosign")]
        (sign,) = [args for args in signs if args[0] == "attest-blob"]
        assert option(sign, "--type") == PREDICATE_TYPE
        assert option(sign, "--predicate") == str(out / "certificate.json") and sign[-1] == model


def test_the_extraction_sees_commands_inside_shell_constructs():
    text = 'if [ -f b ]; then audit compare a b --format md | tee -a "$S"; fi'
    assert commands(text, "audit") == [["compare", "a", "b", "--format", "md"]]


def test_the_parser_refuses_what_the_examples_must_not_contain():
    compare = get_command(app).commands["compare"]
    for bad in (["a.json", "b.json", "--max-drop", "1"], ["a.json", "b.json", "--format", "html"], ["a.json"]):
        with pytest.raises(Exception, match=r"(?i)option|not one of|missing"):
            compare.make_context("compare", bad)


def test_the_predicate_type_is_documented():
    for page in ("README.md", "docs/certificate.md", "docs/cli.md"):
        assert PREDICATE_TYPE in (ROOT / page).read_text(), page
