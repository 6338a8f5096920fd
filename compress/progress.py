"""Rich progress bars on stderr for long work (silent when stderr is not a terminal)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Show a bar for ``total`` units; yields ``advance(n, status=None)`` (``status``: a short text
    shown after the bar, e.g. the current loss)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    quiet = not console.is_terminal or os.environ.get("RANK", "0") != "0"  # one bar under torchrun
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int, status: str | None = None) -> None:
            progress.update(task, advance=n, **({} if status is None else {"status": status}))

        yield advance
