"""The dashboard's pictures and the verifier inside ``report.html``, opened from disk.

The report is one self-contained file under a Content-Security-Policy meta tag. It carries:

- the run data the dashboard would fetch (overview, metrics, networks) as a JSON *data block*
  (``<script type="application/json">``, never executed), with ``<``, ``>`` and ``&`` written as
  ``\\u003c``, ``\\u003e`` and ``\\u0026`` so no text inside it can close the element;
- the dashboard's own ``app.js`` and ``app.css``, inline and unchanged, which draw the same network,
  curves and heat maps from that block instead of the API;
- the static verifier's style and script, byte for byte those of ``verifier.html``, and its markup
  (its ``<main>`` becomes a ``<section>``: the report has a main of its own).

The two scripts run because the report's CSP lists their SHA-256 hashes; nothing else can run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from phalanx.dashboard.app_assets import static_text
from phalanx.dashboard.network import run_network
from phalanx.dashboard.source import clean, slug
from phalanx.dashboard.verifier import parts, source_hash

_MAIN = re.compile(r'<main id="phalanx-verifier">.*?</main>', re.S)


def data_block(value: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` element."""
    text = json.dumps(clean(value), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_data(summary: Mapping[str, Any], records: Mapping[str, Sequence[Mapping]]) -> dict[str, Any]:
    runs = [r for r in summary.get("runs") or [] if isinstance(r, Mapping)]
    overview = {"kind": "study", "study": summary.get("study"), "description": summary.get("description"),
                "live": False, "grid": False,
                "runs": [{"id": i, "name": str(r.get("name")), "topology": r.get("topology"),
                          "defense": r.get("defense"), "final": r.get("final"), "ledger": False,
                          "folder": slug(str(r.get("name")))} for i, r in enumerate(runs)]}
    metrics = [list(records.get(str(r.get("name")), [])) for r in runs]
    networks = [run_network(dict(r)) for r in runs]
    return {"overview": overview, "metrics": metrics, "networks": networks, "grid": None}


def report_parts(summary: Mapping[str, Any], records: Mapping[str, Sequence[Mapping]]) -> dict[str, str]:
    """What the report template needs: the data block, the two scripts, their styles, the verifier."""
    verifier = static_text("verifier.html")
    v_script, v_style = parts(verifier)
    main = _MAIN.search(verifier)
    if main is None:
        raise ValueError("verifier.html: no <main id=\"phalanx-verifier\">")
    app_js = static_text("app.js")
    if "</script" in app_js.lower() or "</script" in v_script.lower():
        raise ValueError("a script that holds </script cannot be inlined")
    # a section, not a second <main>, inside the report's main; the script finds it by id
    section = main.group(0).replace('<main id="phalanx-verifier">', '<section id="phalanx-verifier">', 1)
    section = section[: -len("</main>")] + "</section>"
    return {"data": data_block(report_data(summary, records)), "app_js": app_js, "app_css": static_text("app.css"),
            "verifier_main": section, "verifier_script": v_script, "verifier_style": v_style,
            "script_src": f"{source_hash(app_js)} {source_hash(v_script)}"}


__all__ = ["data_block", "report_data", "report_parts"]
