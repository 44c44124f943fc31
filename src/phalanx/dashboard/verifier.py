"""The static verifier page: one HTML file that checks ledger proofs in the browser, trusting no server.

Why a static page: JavaScript served by the server that serves the proof could print "verified"
whatever the proof says. So the verifier is one self-contained file, ``static/verifier.html``,
whose SHA-256 is published in the README: a user checks the file they run against that hash
(``sha256sum``), opens it from disk or from the dashboard, and pastes the trusted keys and the
witness policy themselves. It then checks, with WebCrypto SHA-256 and Ed25519:

- the checkpoint's signed note (C2SP signed-note): every signature by a known key must verify,
  the log's key (named as the origin, type 0x01) must have signed, and the witnesses'
  timestamped cosignatures (C2SP tlog-cosignature, type 0x04) must meet the policy's quorum
  (C2SP tlog-policy groups);
- the entry's RFC 9162 inclusion proof (section 2.1.3.2) from SHA-256(0x00 || entry bytes) to the
  checkpoint's root, as carried by a C2SP tlog-proof receipt;
- each other checkpoint of the bundle: signed too, and an RFC 9162 consistency proof (section
  2.1.4.2) between it and the receipt's checkpoint;
- the entry's own Ed25519 signature by its submitter, over the entry's canonical CBOR without its
  signature, as :meth:`phalanx.ledger.Entry.verify` checks it.

Its one inline script and one inline style are allowed by a Content-Security-Policy meta tag
that lists their SHA-256 hashes (CSP Level 3 hash sources); nothing else may run, load or
connect. The same page is embedded in ``report.html``. :func:`build` rewrites the meta tag after
an edit (``python -m phalanx.dashboard.verifier``); a test checks the shipped file is built.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
_META = re.compile(r'(<meta http-equiv="Content-Security-Policy" content=")([^"]*)(">)')


def _path() -> Path:
    return Path(str(resources.files("phalanx.dashboard").joinpath("static").joinpath("verifier.html")))


def verifier_html() -> bytes:
    """The shipped file's bytes, exactly (the README publishes their SHA-256)."""
    return _path().read_bytes()


def digest() -> str:
    return hashlib.sha256(verifier_html()).hexdigest()


def source_hash(text: str) -> str:
    """A CSP hash source for an inline script or style: 'sha256-<base64 of its SHA-256>'."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def parts(html: str) -> tuple[str, str]:
    """The page's inline script and style, as the browser hashes them."""
    script, style = _SCRIPT.search(html), _STYLE.search(html)
    if script is None or style is None:
        raise ValueError("verifier.html: expected one inline <script> and one <style>")
    return script.group(1), style.group(1)


def csp_for(html: str) -> str:
    script, style = parts(html)
    return (f"default-src 'none'; script-src {source_hash(script)}; style-src {source_hash(style)}; "
            "img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'")


def verifier_csp() -> str:
    return csp_for(verifier_html().decode())


def build(path: Path | None = None) -> bool:
    """Write the CSP meta tag for the page's current script and style; True if the file changed."""
    path = path or _path()
    html = path.read_text()
    new = _META.sub(lambda m: m.group(1) + csp_for(html) + m.group(3), html, count=1)
    if new != html:
        path.write_text(new)
    return new != html


if __name__ == "__main__":
    print("rebuilt" if build() else "up to date", digest())
