"""What the dashboard reads: one output folder of the range, treated as hostile input.

The folder is the user's choice, but what lies in it may come from anywhere (a colleague's run,
a download, a network's nodes): files may be huge, truncated, not JSON, symlinks out of the
folder, or hold text meant to run as script. This module only *reads*; every error is a
:class:`SourceError` with one line that names the file and the problem.

Three shapes of folder are recognised, by what they hold:

- a **study** (``phalanx run``): ``summary.json`` and one folder per run with ``metrics.jsonl``
  (and, when the ledger is on, ``ledger.db`` and ``policy.txt``);
- a **grid** (``phalanx grid``): ``grid.json`` (its attack x defense tables become heat maps);
- a deployed network's **status snapshot**, ``status.json`` (what a node's status endpoint
  returns, see :mod:`.network`), shown as one more "run" whose nodes named themselves;
- a study **still running** (``--live``): no ``summary.json`` yet, only run folders whose
  ``metrics.jsonl`` grows a line per round (the runner flushes each line). Runs are found by
  their folders; their names and settings appear when ``summary.json`` is written at the end.

A single run's folder (``OUT/<run>``, with ``metrics.jsonl`` directly inside) is read as a study
of one run. :meth:`Source.version` is a cheap token (sizes and modification times) that changes
whenever any of these files does, so that the page asks for data only when there is news.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Largest summary.json or grid.json read (the default study's summary is about 1 MB).
MAX_JSON_BYTES = 64 << 20
#: Largest metrics.jsonl read; a run of 1,000 nodes and 1,000 rounds writes a few MB.
MAX_METRICS_BYTES = 64 << 20
#: A metrics line longer than this is not a metrics record.
MAX_LINE_BYTES = 1 << 20
#: A deployed network's status snapshot (the seam for ``phalanx up``; see :mod:`.network`).
STATUS_FILE = "status.json"
MAX_STATUS_BYTES = 16 << 20
#: Most run folders looked at when there is no summary.json.
MAX_RUNS = 500

_FOLDER = re.compile(r"[^A-Za-z0-9._-]+")


class SourceError(ValueError):
    """An output folder or a file in it that cannot be used; the message names which and why."""


def slug(name: str) -> str:
    """The folder a run's outputs are in, as the runner names it (:func:`phalanx.range.scenario.slug`)."""
    return _FOLDER.sub("-", name).strip("-") or "run"


def inside(root: Path, *parts: str) -> Path:
    """``root / parts``, refused unless it resolves (symlinks followed) to a path inside ``root``."""
    for p in parts:
        if not p or p in (".", "..") or "/" in p or "\\" in p or "\x00" in p:
            raise SourceError(f"{p!r} is not a plain file or folder name")
    path = root.joinpath(*parts)
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise SourceError(f"{'/'.join(parts)} leads outside {root}")
    return real


def read_json(path: Path, limit: int | None = None) -> Any:
    """A JSON file of at most ``limit`` bytes (default :data:`MAX_JSON_BYTES`); NaN and infinities
    are read as null."""
    limit = MAX_JSON_BYTES if limit is None else limit
    try:
        size = path.stat().st_size
        if size > limit:
            raise SourceError(f"{path.name}: {size} bytes is more than the {limit} this reads")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise SourceError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise SourceError(f"{path.name}: more than the {limit} bytes this reads")
    try:
        return json.loads(data, parse_constant=lambda _: None)
    except (ValueError, RecursionError) as e:
        raise SourceError(f"{path.name}: not valid JSON ({str(e)[:120]})") from None


def clean(value: Any, depth: int = 0) -> Any:
    """JSON-safe copy: non-finite floats become null, so the page's JSON.parse never fails."""
    if depth > 64:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value]
    return value


@dataclass
class Run:
    """One run: its index on the page, its name, its folder, and its summary entry (when written)."""

    id: int
    name: str
    folder: Path | None
    summary: dict[str, Any]

    @property
    def ledger(self) -> Path | None:
        if self.folder is None:
            return None
        path = self.folder / "ledger.db"
        return path if path.is_file() else None


@dataclass
class MetricsTail:
    """The rows of a metrics.jsonl from line ``start`` on; ``next`` is the line to ask for next."""

    rows: list[dict[str, Any]]
    next: int
    skipped: int = 0


class Source:
    """An output folder: a study, a grid, a single run, or a study still running."""

    def __init__(self, folder: str | Path):
        path = Path(folder)
        if not path.exists():
            raise SourceError(f"{folder}: no such folder")
        if not path.is_dir():
            raise SourceError(f"{folder}: not a folder (give the folder a run or study wrote)")
        self.root = Path(os.path.realpath(path))
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise SourceError(f"{folder}: cannot read this folder")
        self._cache: dict[str, tuple[tuple, Any]] = {}
        if not (self._has("summary.json") or self._has("grid.json") or self._has("metrics.jsonl")
                or self._has(STATUS_FILE) or self._run_folders()):
            raise SourceError(f"{folder}: no summary.json, grid.json or run folder with metrics.jsonl: "
                              "not an output folder of phalanx run or phalanx grid")

    # ------------------------------------------------------------------ files

    def _has(self, name: str) -> bool:
        try:
            return inside(self.root, name).is_file()
        except SourceError:
            return False

    def _stamp(self, path: Path) -> tuple:
        try:
            st = path.stat()
        except OSError:
            return (str(path), None)
        return (str(path), st.st_size, st.st_mtime_ns)

    def _json(self, name: str) -> Any:
        path = inside(self.root, name)
        stamp = self._stamp(path)
        cached = self._cache.get(name)
        if cached and cached[0] == stamp:
            return cached[1]
        value = read_json(path)
        self._cache[name] = (stamp, value)
        return value

    def _run_folders(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.root))[: MAX_RUNS * 4]
        except OSError:
            return []
        out = []
        for n in names:
            try:
                if inside(self.root, n, "metrics.jsonl").is_file():
                    out.append(inside(self.root, n))
            except SourceError:
                continue
            if len(out) >= MAX_RUNS:
                break
        return out

    # ------------------------------------------------------------------ what is here

    @property
    def kind(self) -> str:
        if self._has("grid.json"):
            return "grid"
        if self._has("summary.json") or self._has("metrics.jsonl") and not self._run_folders():
            return "study"
        return "running"

    def summary(self) -> dict[str, Any] | None:
        if not self._has("summary.json"):
            return None
        value = self._json("summary.json")
        if not isinstance(value, dict) or not isinstance(value.get("runs", []), list):
            raise SourceError("summary.json: not a study summary (expected an object with a list of runs)")
        return value

    def grid(self) -> dict[str, Any] | None:
        if not self._has("grid.json"):
            return None
        value = self._json("grid.json")
        if not isinstance(value, dict):
            raise SourceError("grid.json: not a grid summary (expected an object)")
        return value

    def runs(self) -> list[Run]:
        """Every run (from summary.json when written, else from the run folders: a live study),
        then a deployed network's status snapshot, when the folder has one (``status.json``)."""
        runs = self._runs()
        if self._has(STATUS_FILE):
            status = read_json(inside(self.root, STATUS_FILE), MAX_STATUS_BYTES)
            runs.append(Run(len(runs), "network (status.json)", None, {"status": status}))
        return runs

    def _runs(self) -> list[Run]:
        summary = self.summary()
        if summary is not None:
            out = []
            for i, r in enumerate(summary.get("runs", [])[:MAX_RUNS]):
                if not isinstance(r, dict):
                    raise SourceError(f"summary.json: run {i} is not an object")
                name = str(r.get("name", f"run {i}"))
                folder = (r.get("ledger") or {}).get("folder") if isinstance(r.get("ledger"), dict) else None
                folder = folder if isinstance(folder, str) else slug(name)
                try:
                    path = inside(self.root, folder)
                except SourceError:
                    path = None
                if path is None and self._has("metrics.jsonl"):
                    path = self.root
                out.append(Run(i, name, path if path is not None and path.is_dir() else None, r))
            return out
        if self._has("metrics.jsonl") and not self._run_folders():
            return [Run(0, self.root.name, self.root, {})]
        return [Run(i, p.name, p, {}) for i, p in enumerate(self._run_folders())]

    def run(self, run_id: int) -> Run:
        runs = self.runs()
        if not 0 <= run_id < len(runs):
            raise SourceError(f"no run {run_id}: this folder has {len(runs)}")
        return runs[run_id]

    def metrics(self, run_id: int, start: int = 0) -> MetricsTail:
        """Rows of the run's metrics.jsonl from line ``start``; a torn last line waits for its end."""
        run = self.run(run_id)
        if start < 0:
            raise SourceError("start: must be 0 or more")
        if run.folder is None:
            return MetricsTail([], 0)
        path = run.folder / "metrics.jsonl"
        if not path.is_file():
            return MetricsTail([], 0)
        try:
            size = path.stat().st_size
            if size > MAX_METRICS_BYTES:
                raise SourceError(f"{run.name}/metrics.jsonl: {size} bytes is more than the "
                                  f"{MAX_METRICS_BYTES} this reads")
            with path.open("rb") as fh:
                data = fh.read(MAX_METRICS_BYTES)
        except OSError as e:
            raise SourceError(f"{run.name}/metrics.jsonl: cannot read ({e.strerror or e})") from None
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline may be a line still being written
        rows, skipped = [], 0
        for line in complete[start:]:
            if len(line) > MAX_LINE_BYTES:
                skipped += 1
                continue
            try:
                row = json.loads(line, parse_constant=lambda _: None)
            except ValueError:
                skipped += 1
                continue
            if isinstance(row, dict):
                rows.append(clean(row))
            else:
                skipped += 1
        return MetricsTail(rows, max(start, len(complete)), skipped)

    def version(self) -> str:
        """A token that changes when any file the page shows changes (sizes and mtimes, hashed)."""
        stamps = [self._stamp(self.root / n) for n in ("summary.json", "grid.json", "metrics.jsonl", STATUS_FILE)]
        for p in self._run_folders():
            stamps += [self._stamp(p / "metrics.jsonl"), self._stamp(p / "ledger.db")]
        import hashlib

        return hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]


__all__ = ["MAX_JSON_BYTES", "MAX_METRICS_BYTES", "MetricsTail", "Run", "Source", "SourceError", "clean",
           "inside", "read_json", "slug"]
