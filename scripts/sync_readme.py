"""Rewrite the README's scenario reference (between the reference markers) from the schema."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from phalanx.range.reference import scenario_reference

START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def synced(text: str) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{scenario_reference()}{END}", text)


if __name__ == "__main__":
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / "README.md")
    readme.write_text(synced(readme.read_text()))
