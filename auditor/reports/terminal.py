"""The summary ``audit certify`` prints: a rich table that fits in 80 columns."""

from __future__ import annotations

from .escape import rich_text
from .rows import summary_rows


def print_summary(cert: dict, console) -> None:
    """The summary table and the verdict's meaning; every cell is a rich ``Text``, never markup."""
    from rich.table import Table

    table = Table(title="VAE audit certificate", show_header=False, expand=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    colour = "green" if cert["verdict"] == "certified" else "yellow"
    for label, value in summary_rows(cert):
        table.add_row(rich_text(label), rich_text(value, style=colour if label == "verdict" else ""))
    console.print(table)
    console.print(rich_text(cert["meaning"]))
