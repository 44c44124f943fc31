"""A rich progress bar for a running study: one line per run, with its latest accuracy."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StudyProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"), TextColumn("avail {task.fields[avail]}"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
        )

    def __enter__(self) -> "StudyProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def add(self, name: str, rounds: int) -> int:
        return self._progress.add_task(name[:28], total=rounds, acc="  -  ", avail="  -  ")

    def advance(self, task: int, record: dict) -> None:
        fields = {"avail": f"{record['availability']:.2f}"}
        if record.get("accuracy") is not None:
            fields["acc"] = f"{record['accuracy']:.3f}"
        self._progress.update(task, advance=1, **fields)
