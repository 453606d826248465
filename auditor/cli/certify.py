"""``audit certify``: one audit, a report, an exit code (0 certified, 1 not certified, 2 bad input)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..audit.batch_size import parse_batch_size
from ..audit.distributed import is_main_process
from ..audit.pipeline import run_audit
from ..audit.request import AuditRequest
from ..certificate.document import certificate_dict
from ..certificate.paths import paths_relative_to
from ..reports.escape import rich_text
from ..reports.markdown import render_markdown
from ..reports.progress import BatchProgress, progress_wanted
from ..reports.terminal import print_summary
from ..reports.writer import (
    append_github_step_summary,
    parse_formats,
    render_reports,
    step_summary_wanted,
    write_rendered,
)
from ..sources.atomic import require_writable_folder
from .data_flags import COLUMN, IMAGE_SIZE, TEST_EVERY, data_options
from .invocation import current_command


def default_out_dir(model: Path | None, latents: Path | None, arch: str | None) -> Path:
    """reports/<the model folder's name, or the model or latents file's stem, or the factory's name>/."""
    source = model or latents
    if source is not None and source.is_dir():
        return Path("reports") / source.resolve().name  # a diffusers or pythae folder: its weights files share names
    stem = source.stem if source is not None else (arch or "model").replace(":", "-").replace(".", "-")
    return Path("reports") / stem


def certify(
    model: Path | None = typer.Option(
        None,
        "--model",
        help="vae.safetensors with vae_audit metadata, a diffusers or pythae model folder, or weights for --arch.",
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="module:factory or path/to/file.py:factory returning an nn.Module with encode(x)."
    ),
    arch_args: list[str] = typer.Option(
        [],
        "--arch-arg",
        help="name=value keyword argument of the factory (repeatable; the value is JSON when it parses).",
    ),
    key_prefix: str | None = typer.Option(
        None, "--key-prefix", help="Read only the weights whose names start with this prefix, stripped (e.g. model.)."
    ),
    state_key: str | None = typer.Option(
        None, "--state-key", help="The entry of a .pt/.pth/.ckpt file that holds the state dict (a/b when nested)."
    ),
    trust_code: bool = typer.Option(
        False, "--trust-code", help="Allow a model file whose loading runs code (a pythae encoder.pkl)."
    ),
    latents: Path | None = typer.Option(None, "--latents", help="Precomputed means: tensor 'mu' (optional 'logvar')."),
    teacher: Path | None = typer.Option(
        None, "--teacher", help="teacher.pt (pca-gmm), or a .pt2 program with --trust-teacher-code."
    ),
    teacher_probs: Path | None = typer.Option(
        None, "--teacher-probs", help="Precomputed teacher probabilities: tensor 'probs', N×K."
    ),
    trust_teacher_code: bool = typer.Option(
        False, "--trust-teacher-code", help="Allow a .pt2 teacher, whose loading can run code."
    ),
    data: str | None = typer.Option(None, "--data", help="'digits' or a data file/folder (see README)."),
    split: str | None = typer.Option(None, "--split", help="train, test or all (default all)."),
    limit: int | None = typer.Option(None, "--limit", help="Audit only the first N samples."),
    image_size: str | None = IMAGE_SIZE,
    column: str | None = COLUMN,
    test_every: int | None = TEST_EVERY,
    teacher_data: str | None = typer.Option(
        None, "--teacher-data", help="The teacher's view of the same samples (enables the view gap)."
    ),
    view_probs: Path | None = typer.Option(
        None, "--view-probs", help="Teacher probabilities on the encoder's view (view gap with --teacher-probs)."
    ),
    witness: Path | None = typer.Option(
        None, "--witness", help="witness.json from audit design / teacher search: K, β, offset (instead of the flags)."
    ),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Witness K (default: the teacher's K)."),
    beta: float | None = typer.Option(None, "--beta", help="Witness scale β (needed unless the checkpoint fixes it)."),
    witness_offset: int | None = typer.Option(
        None, "--witness-offset", help="First latent row of the witness (default 0)."
    ),
    confidence: float = typer.Option(
        0.95, "--confidence", help="One-sided confidence of the margin's lower bound; 0 = exact audit-set margin."
    ),
    min_margin: float = typer.Option(0.0, "--min-margin", help="Safety margin δ in nats: certified iff LCB >= δ."),
    batch_size: str = typer.Option("512", "--batch-size", help="Samples per batch, or 'auto' (the largest that fits)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", "--precision", help="Encoder/teacher forward precision: fp32, bf16 or fp16."),
    model_diagnostics: bool = typer.Option(
        True,
        "--model-diagnostics/--no-model-diagnostics",
        help="Decoder/posterior diagnostics on a 512-sample subset (default on; never part of the verdict).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder (default reports/<model folder name or file stem>/)."
    ),
    formats: str = typer.Option(
        "json,md", "--format", help="Comma-separated: json (always written), md, html, junit, intoto."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No summary on the terminal (errors still go to stderr)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print the certificate JSON on stdout, nothing else there (the summary goes to stderr)."
    ),
) -> int:
    """Certify a VAE against exact constant collapse of its encoder mean."""
    from rich.console import Console

    fmt_list = parse_formats(formats)
    out_dir = out if out is not None else default_out_dir(model, latents, arch)
    if is_main_process():  # rank 0 alone writes
        require_writable_folder(out_dir, "--out")
    reading = data_options(image_size, column, test_every)
    request = AuditRequest(
        model=model,
        arch=arch,
        arch_args=tuple(arch_args),
        key_prefix=key_prefix,
        state_key=state_key,
        trust_code=trust_code,
        latents=latents,
        teacher=teacher,
        teacher_probs=teacher_probs,
        trust_teacher_code=trust_teacher_code,
        data=data,
        split=split,
        limit=limit,
        image_size=reading.image_size,
        column=reading.column,
        test_every=reading.test_every,
        teacher_data=teacher_data,
        view_probs=view_probs,
        num_classes=num_classes,
        beta=beta,
        witness_offset=witness_offset,
        witness=witness,
        confidence=confidence,
        min_margin=min_margin,
        batch_size=parse_batch_size(batch_size),
        device=device,
        precision=precision,
        model_diagnostics=model_diagnostics,
    )
    # --json: stdout carries the JSON alone, so no progress bar there even on a terminal.
    with BatchProgress(enabled=progress_wanted(quiet or json_out) and is_main_process()) as progress:
        result = run_audit(request, progress=progress)
    if not is_main_process():
        # torchrun: rank 0 alone writes, prints and exits with the verdict. Another rank's non-zero
        # exit would make torchrun kill rank 0, possibly before its report is written, so the
        # others exit 0 once their share is in; torchrun's own exit code then follows rank 0's.
        return 0
    cert = certificate_dict(result, current_command(), paths_relative_to(out_dir))
    # Everything that could fail is done before the first file is written: every report, the
    # job summary's Markdown and the terminal summary are rendered first.
    rendered = render_reports(cert, fmt_list)
    step_summary = (rendered.get("certificate.md") or render_markdown(cert)) if step_summary_wanted() else None
    console = Console(stderr=json_out)  # colour only when that stream is a terminal (rich decides)
    summary = None
    if not quiet:
        with console.capture() as capture:
            print_summary(cert, console)
        summary = capture.get()
    written = write_rendered(rendered, out_dir, replaces_set=True)
    if step_summary is not None:
        append_github_step_summary(step_summary)
    if json_out:
        sys.stdout.write(rendered["certificate.json"])
    if summary is not None:
        console.file.write(summary)
        console.print(rich_text(f"wrote {', '.join(str(p) for p in written)}"))
    return 0 if result.verdict.certified else 1


def register(app: typer.Typer) -> None:
    app.command("certify")(certify)
