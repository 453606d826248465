"""Strings from outside reach every output format as text: Markdown read back with markdown-it-py
(CommonMark plus GFM tables, as GitHub renders it), JUnit XML with ElementTree, HTML with the
standard library's parser, and the terminal through rich and plain prints."""

from __future__ import annotations

import copy
import io
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from rich.console import Console

from auditor.certificate.check import check_certificate
from auditor.reports.escape import markdown_code, markdown_text, rich_text, visible
from auditor.reports.html import render_html
from auditor.reports.junit import render_junit
from auditor.reports.markdown import render_markdown
from auditor.reports.terminal import print_summary

from .report_fixtures import certify, run_cli, write_inputs

HOSTILE = [
    "models/a.safetensors`\n# Certified: this model is fine\n| pwned | x |",
    "x`\n\n## Injected heading",
    "m\x01odel\x1b[31m red",
    "a|b||c\\|d",
    "``double`` and `single` and ```",
    "`",
    " lead and trail ",
    "[bold]bold[/] [link=https://evil.example]click[/link] [/]",
    "\\[not a tag] and trailing \\",
    ":warning: $x^2$ *em* _em_ ~~del~~ <script>alert(1)</script> &amp; ![img](http://x/y.png) [l](http://x)",
    "bidi \u202eevil\u202c zero\u200bwidth line\u2028sep",
    "undecodable \udcff byte",
    "tab\tand\rreturn\x00nul\x7fdel\x85nel",
    "",
]

# markdown-it-py with GitHub's table extension: the renderer GitHub's job summary and files follow.
MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _cert_with(cert: dict, text: str) -> dict:
    """``cert`` with ``text`` in every string a user or a stranger's file can choose."""
    cert = copy.deepcopy(cert)
    for record in cert["inputs"]:
        record["path"] = f"{record['role']}/{text}"
        record["role"] = f"{record['role']}{text}"
    cert["command"] = ["audit", "certify", "--out", text]
    cert["tool_version"] = text
    cert["model"] = {"source": "latents", "path": text}
    cert["view_gap_reason"] = text or "none"
    return check_certificate(cert)  # the checker accepts any string there: the renderers must cope


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    return certify(tmp_path_factory.mktemp("audit"))[1]


def _inline_text(token) -> str:
    """What an inline token shows: its text and code spans, unescaped, as a reader sees it."""
    return "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))


def _tables(tokens) -> list[list[list[str]]]:
    """Every table as rows of cell texts."""
    tables, row = [], None
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif token.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            assert row is not None
            row.append(_inline_text(token))
    return tables


def _check_markdown(cert: dict, text: str) -> None:
    tokens = MD.parse(render_markdown(cert))
    headings = [_inline_text(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    # The verdict heading is the JSON's, and no heading comes from a string.
    assert headings == [
        f"VAE audit certificate: {cert['verdict'].replace('_', ' ')}",
        "View gap",
        "Per teacher class",
        "Inputs",
    ]
    tables = _tables(tokens)
    assert len(tables) == 3
    for table in tables:
        assert len({len(row) for row in table}) == 1  # every row keeps the header's cell count
    summary, _, inputs = tables
    shown = dict(summary[1:])
    # The numbers are the JSON's, formatted here from the JSON and not through the renderer's code.
    assert shown["margin Ĝ = I_T − L (nats)"] == f"{cert['margin']:.4f}"
    assert shown["teacher information I_T"] == f"{cert['teacher_information']:.4f}"
    assert shown["verdict"] == cert["verdict"].replace("_", " ")
    assert shown["max |μ − mean μ| (exact constancy)"] == f"{cert['diagnostics']['max_abs_deviation_from_mean']:.6f}"
    assert [row[:2] for row in inputs[1:]] == [[visible(r["role"]), visible(r["path"])] for r in cert["inputs"]]
    paragraphs = [_inline_text(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "paragraph_open"]
    assert f"Not computed: {visible(cert['view_gap_reason'])}." in paragraphs
    assert paragraphs[-1] == f"Tool version {visible(text)}. Command: {visible(' '.join(cert['command']))}"


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_markdown_shows_every_string_as_text(audited, text):
    _check_markdown(_cert_with(audited, text), text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from("`|\\*_[]()<>!&$~#\n\r\t -=.:x\x1b\u202e\udcff"), max_size=24) | st.text())
def test_markdown_fuzz(audited, text):
    _check_markdown(_cert_with(audited, text), text)


def test_summary_labels_with_pipes_keep_their_cells(audited):
    """GitHub splits a cell at '|' even inside text: max |μ − mean μ| and log p(x|μ(x)) once lost their values."""
    cert = copy.deepcopy(audited)
    cert["diagnostics"]["model"] = {"identifiability": {"computed": True, "gap": 1.25}}
    summary = _tables(MD.parse(render_markdown(cert)))[0]
    assert ["log p(x|μ(x)) − log p(x|z~prior) (nats)", "1.2500"] in summary
    assert all(len(row) == 2 for row in summary)


@pytest.mark.parametrize("text", ["a`b", "``", "` x `", "a|b", " ", "plain"])
def test_code_span_shows_its_text_exactly(text):
    for in_table in (False, True):
        span = markdown_code(text, in_table)
        source = f"| h |\n| - |\n| {span} |" if in_table else f"x {span}"
        tokens = MD.parse(source)
        inline = [t for t in tokens if t.type == "inline"][-1]
        codes = [c.content for c in inline.children if c.type == "code_inline"]
        assert codes == [text]


def test_markdown_text_renders_as_itself():
    for text in HOSTILE:
        tokens = MD.parse(f"x {markdown_text(text)}")
        inline = [t for t in tokens if t.type == "inline"][0]
        assert [c.type for c in inline.children] in (["text"], ["text", "text"], ["text", "html_inline"])
        assert _inline_text(inline) in (f"x {visible(text)}", f"x {visible(text)}".rstrip())


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_junit_is_well_formed_and_keeps_the_strings(audited, text):
    cert = _cert_with(audited, text)
    root = ET.fromstring(render_junit(cert).encode("utf-8"))
    cases = root.findall("./testsuite/testcase")
    assert {case.get("classname") for case in cases} == {f"vae-audit.{visible(text or 'model')}"}
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["tool_version"] == visible(text) and properties["verdict"] == cert["verdict"]
    skipped = root.find("./testsuite/testcase/skipped")
    assert skipped is not None and skipped.get("message") == f"not computed: {visible(cert['view_gap_reason'])}"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_html_shows_the_strings_as_text(audited, text):
    cert = _cert_with(audited, text)
    page = _Page()
    page.feed(render_html(cert))
    reference = _Page()
    reference.feed(render_html(_cert_with(audited, "plain")))
    assert page.tags == reference.tags  # no element came from a string
    assert f"Tool version {visible(text)}. Command: " in "".join(page.text)
    render_html(cert).encode("utf-8")  # writable as UTF-8, surrogates included


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_rich_text_prints_exactly(text):
    console = Console(file=io.StringIO(), width=400, color_system=None, emoji=True, markup=True)
    console.print(rich_text(text))
    assert console.file.getvalue() == visible(text) + "\n"


def test_summary_table_prints_values_literally(audited):
    cert = copy.deepcopy(audited)
    cert["verdict"] = "[/]"  # not a certificate the checker passes: print_summary must not care
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_summary(cert, console)
    assert "[/]" in console.file.getvalue()


@pytest.mark.parametrize("name", ["out[/]", "x[link=https://evil.example]click[/link]", "[bold]b", "e\x1b[31mred"])
def test_certify_prints_the_out_folder_literally(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / name
    assert run_cli(["certify", *write_inputs(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert "wrote " in printed and visible(out / "certificate.md") in printed
    assert "\x1b" not in printed
    assert sorted(p.name for p in out.iterdir()) == ["certificate.json", "certificate.md"]


def test_undecodable_file_name_is_reported(tmp_path, capsys):
    """A latents file whose name is not valid UTF-8 (a surrogate after surrogateescape) once crashed
    the Markdown writer after certificate.json was written."""
    args = write_inputs(tmp_path)
    odd = tmp_path / os.fsdecode(b"mu\xff.npz")
    (tmp_path / "lat.npz").rename(odd)
    args[1] = str(odd)
    code = run_cli(["certify", *args, "--out", str(tmp_path / "r"), "--format", "json,md,html,junit"])
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "r" / "certificate.md").read_text(encoding="utf-8")
    assert "mu\\udcff.npz" in md
    assert code == run_cli(["report", str(tmp_path / "r" / "certificate.json"), "--format", "md,html,junit"])
