"""The README's ledger example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_ledger_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "Ledger.create" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("c2sp.org/tlog-proof@v1\nextra ")
    assert (tmp_path / "ledger.db").exists()
