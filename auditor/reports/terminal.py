"""The summary ``audit certify`` prints: a rich table that fits in 80 columns."""

from __future__ import annotations

from .rows import one_line, summary_rows


def print_summary(cert: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="VAE audit certificate", show_header=False, expand=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    colour = "green" if cert["verdict"] == "certified" else "yellow"
    for label, value in summary_rows(cert):
        value = escape(one_line(value))  # reasons come from the certificate: never markup or escape codes
        table.add_row(label, f"[{colour}]{value}[/]" if label == "verdict" else value)
    console.print(table)
    console.print(cert["meaning"])
