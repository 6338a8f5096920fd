"""Per-layer tables on screen with whole layer names.

rich fits a table to the console by shrinking every column and cutting cells with "…"; on a
torchvision model that turned ``layer4.0.downsample.0`` into ``layer4.0…``, and where the output
is not a terminal (a pipe, a file, a captured subprocess) rich assumes 80 columns. The layer
column never wraps or shrinks below its longest name, and off a terminal the table prints at its
natural width (a file has no width to fit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

UNBOUNDED = 10_000  # columns: wider than any table, to measure a table's natural width


def add_layer_column(table: "Table", names: Iterable[str], header: str = "layer") -> None:
    """A left-aligned column as wide as the longest of ``names`` (and ``header``), never cut."""
    width = max([len(header), *(len(name) for name in names)])
    table.add_column(header, justify="left", no_wrap=True, min_width=width)


def print_table(table: "Table") -> None:
    """``table`` on stdout: at the terminal's width on a terminal, else at its natural width."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum
        console = Console(width=max(console.width, natural))
    console.print(table)
