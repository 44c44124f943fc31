"""The README's ledger example (a two-faced node, a rollback) runs as written and says what the
commands print: the audit with its reverted rounds and replay, and the trace with the evidence."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli
from typer.testing import CliRunner

from phalanx.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _fenced() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the README, in order."""
    blocks, lang, lines = [], None, []
    for line in README.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _block(lang: str, marker: str) -> str:
    (block,) = [text for kind, text in _fenced() if kind == lang and marker in text]
    return block


def _shown(command: str) -> list[str]:
    """The lines the README shows under ``$ phalanx <command> ...`` in the ledger example."""
    (block,) = [text for kind, text in _fenced() if kind == "" and f"$ phalanx {command} out/demo" in text]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"$ phalanx {command}"))
    return [line for line in lines[start + 1:] if not line.startswith("$ ")]


def test_the_readme_ledger_example_runs_and_prints_what_it_shows(tmp_path):
    (tmp_path / "two_faced.py").write_text(_block("python", "two_faced"))
    (tmp_path / "ledger-demo.yaml").write_text(_block("yaml", "ledger-demo.yaml"))
    result = run_cli("run", "ledger-demo.yaml", "--out", "out/demo", "--no-progress", cwd=tmp_path,
                     extra_paths=[tmp_path])
    assert result.returncode == 0, result.stderr
    run = tmp_path / "out" / "demo" / "two-faced"
    audit = CliRunner().invoke(app, ["audit", str(run / "ledger.db"), "--policy", str(run / "policy.txt"),
                                     "--replay"])
    assert audit.exit_code == 0, audit.stderr
    got, shown = audit.stdout.splitlines(), _shown("audit")
    assert got[0] == shown[0]  # entries and checkpoints
    hashless = lambda line: re.sub(r"[0-9a-f]{16}", "H", re.sub(r" \(\d+\.\d s\)$", "", line))  # noqa: E731
    assert [hashless(line) for line in got[1:]] == [hashless(line) for line in shown[1:]]
    # node 7's final model (its hash may differ on another kind of CPU; who it is does not)
    model = json.loads((tmp_path / "out" / "demo" / "summary.json").read_text())["runs"][0]["ledger"]["models"][7]
    trace = CliRunner().invoke(app, ["trace", str(run / "ledger.db"), model, "--rounds", "1"])
    assert trace.exit_code == 0, trace.stderr
    assert [hashless(line) for line in trace.stdout.splitlines()] == [hashless(line) for line in _shown("trace")]
