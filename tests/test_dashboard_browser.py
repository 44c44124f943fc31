"""The dashboard and the verifier in a real browser: Debian's Chromium, driven by Playwright.

Set PHALANX_REQUIRE_BROWSER=1 (as .ci/run does) to fail instead of skip where Chromium or
Playwright is missing. Screenshots are kept under tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from dashboard_helpers import ARTIFACTS, Served, browser_or_skip, copy_study, launch, small_study

HOSTILE_RUN = "<script>window.__pwned = 'run name'</script>"
HOSTILE_NODE = "<img src=x onerror=\"window.__pwned = 'node name'\">"
HOSTILE_VERSION = "1.0<script>window.__pwned = 'version'</script>"
HOSTILE_NOTE = "<svg onload=\"window.__pwned = 'ledger'\"></svg> & friends"


@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        context = launch(p)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.text
            and "404" not in m.text else None)
    page.errors = errors
    yield page
    page.close()


def _loaded(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#phalanx-dashboard[data-updates]", timeout=30_000)


def test_the_dashboard_shows_nodes_curves_and_entries_and_a_clicked_nodes_history(page):
    served = Served(small_study())
    try:
        _loaded(page, served.url + "/")
        assert page.inner_text("#title") == "Phalanx: small"
        stats = page.inner_text("#net-stats")
        assert stats.startswith("18 nodes, 17 edges (star)") and "1 server" in stats and "4 validator" in stats
        # one line per run in the accuracy chart, and the attack success rate of the star
        assert page.locator("figure[data-metric=accuracy] path.series").count() == 2
        assert page.locator("figure[data-metric=attack_success] path.series").count() == 1
        assert page.locator("figure[data-metric=epsilon] .empty").count() == 1
        assert page.locator("#nav-grid").is_hidden()  # a study, not a grid: no link to an empty section
        page.wait_for_selector("#led-entries tbody tr")
        assert page.locator("#led-entries tbody tr").count() == 50
        assert page.locator("#led-entries tbody tr").first.get_attribute("data-type") == "node_registration"
        assert page.locator("#led-checkpoints > li").count() >= 6
        assert page.locator("#led-trace details").count() == 7  # rounds 6..1 and the starting model
        # click a Sybil on the canvas
        x, y = page.evaluate("window.phalanxNodePoint(11)")
        page.mouse.click(x, y)
        page.wait_for_selector("#node-info[data-node='11']")
        info = page.inner_text("#node-info")
        assert "node11" in info and ("malicious" in info or "quarantined" in info) and "admission" in info
        assert "updates logged" in info
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        assert page.errors == []
    finally:
        served.close()


def _verify(page, policy: str, bundle: str) -> str:
    page.fill("#pv-policy", policy)
    page.fill("#pv-bundle", bundle)
    page.locator("#pv-result").evaluate("e => e.removeAttribute('data-done')")
    page.click("#pv-verify")
    page.wait_for_selector("#pv-result[data-done]", timeout=20_000)
    return page.inner_text("#pv-result")


def test_the_verifier_checks_a_proof_and_says_when_the_ledger_was_tampered_with(page, tmp_path):
    out = copy_study(tmp_path / "out")
    policy = (out / "star-sybils" / "policy.txt").read_text()  # the user's trusted keys, from disk
    served = Served(out)
    try:
        bundle = page.request.get(served.url + "/api/runs/0/ledger/bundle/40").text()
        page.goto(served.url + "/verifier.html")
        result = _verify(page, policy, bundle)
        assert result.startswith("Verified: entry 40 is in the log phalanx.sim/star-sybils"), result
        checks = page.inner_text("#pv-checks")
        assert "inclusion: entry 40" in checks and "consistency" in checks and "witness quorum witnesses met" in checks
        assert '"type": "update_commitment"' in page.inner_text("#pv-entry")
        # keys the user did not paste: someone else's log key
        other = policy.replace("log phalanx.sim/star-sybils+", "log phalanx.sim/other+")
        assert _verify(page, other, bundle).startswith("Verification failed")
        # a witness quorum the checkpoint does not meet: two cosignatures dropped from the bundle
        data = json.loads(bundle)
        lines = data["receipt"].split("\n")
        data["receipt"] = "\n".join(line for line in lines if "validator0 " not in line and "validator1 " not in line)
        assert "quorum witnesses is not met" in _verify(page, policy, json.dumps(data))
        # tamper with the ledger file: one byte of entry 40
        with sqlite3.connect(out / "star-sybils" / "ledger.db") as con:
            raw = con.execute("SELECT data FROM entries WHERE idx = 40").fetchone()[0]
            con.execute("UPDATE entries SET data = ? WHERE idx = 40", (raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:],))
        tampered = page.request.get(served.url + "/api/runs/0/ledger/bundle/40").text()
        assert tampered != bundle
        result = _verify(page, policy, tampered)
        assert result.startswith("Verification failed: inclusion: the proof leads to root"), result
        # tamper with a checkpoint instead: the log's signature no longer verifies
        with sqlite3.connect(out / "star-sybils" / "ledger.db") as con:
            con.execute("UPDATE entries SET data = ? WHERE idx = 40", (raw,))
            cid, note = con.execute("SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            text = note.decode().split("\n")
            text[1] = str(int(text[1]) + 1)
            con.execute("UPDATE checkpoints SET note = ? WHERE id = ?", ("\n".join(text).encode(), cid))
        forged = page.request.get(served.url + "/api/runs/0/ledger/bundle/40").text()
        assert "does not verify" in _verify(page, policy, forged)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "verifier-failed.png"), full_page=True)
        assert page.errors == []
    finally:
        served.close()


def test_the_verifier_inside_report_html_works_from_disk(page, cli):
    out = small_study()
    bundle = cli("ledger", "bundle", str(out / "gossip" / "ledger.db"), "30")
    assert bundle.returncode == 0, bundle.stderr
    page.goto((out / "report.html").as_uri())
    page.wait_for_selector("#phalanx-dashboard[data-updates]", timeout=30_000)
    assert page.inner_text("#net-stats").startswith("18 nodes")
    assert _verify(page, (out / "gossip" / "policy.txt").read_text(), bundle.stdout).startswith(
        "Verified: entry 30 is in the log phalanx.sim/gossip")
    assert page.errors == []


def _make_hostile(out: Path) -> None:
    """A run named as a script; a network whose nodes name themselves with markup; a ledger entry
    (a newly registered node's dataset note) that carries markup."""
    from phalanx.core.keys import SigningKey
    from phalanx.ledger import Admission, DatasetCommitment, Ledger, NodeRegistration

    summary = json.loads((out / "summary.json").read_text())
    summary["runs"][1]["name"] = HOSTILE_RUN
    (out / "summary.json").write_text(json.dumps(summary))
    status = {"nodes": [{"id": "a", "name": HOSTILE_NODE, "version": HOSTILE_VERSION, "peers": ["b"], "reputation": 0.2},
                        {"id": "b", "name": "honest-b", "version": "0.1.0", "peers": ["a"], "role": "validator"}]}
    (out / "status.json").write_text(json.dumps(status))
    key = SigningKey.generate()
    with Ledger.open(out / "star-sybils" / "ledger.db") as ledger:
        ledger.submit(NodeRegistration(software="evil-1.0", admission=Admission(kind="open")), key)
        ledger.submit(DatasetCommitment(name="evil", root=b"\0" * 32, samples=10, description=HOSTILE_NOTE), key)


def test_hostile_names_are_shown_as_text_and_nothing_runs(page, tmp_path):
    from playwright.sync_api import expect

    out = copy_study(tmp_path / "out")
    _make_hostile(out)
    served = Served(out)
    try:
        _loaded(page, served.url + "/")
        assert HOSTILE_RUN in [o.inner_text() for o in page.locator("#net-run option").all()]
        page.select_option("#net-run", "2")  # the network's status snapshot
        # (wait_for_function would evaluate a string: the page's CSP refuses eval, even to the test)
        page.locator("#net-stats", has_text="2 nodes, 1 edges").wait_for()
        x, y = page.evaluate("window.phalanxNodePoint(0)")
        page.mouse.click(x, y)
        page.wait_for_selector("#node-info[data-node='0']")
        assert page.inner_text("#node-info .node-name") == HOSTILE_NODE
        assert HOSTILE_VERSION in page.inner_text("#node-info")
        page.select_option("#led-type", "dataset_commitment")
        expect(page.locator("#led-entries tbody tr")).to_have_count(14)
        assert HOSTILE_NOTE in page.inner_text("#led-entries")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#phalanx-dashboard img, #phalanx-dashboard script, #phalanx-dashboard svg[onload]").count() == 0
        page.screenshot(path=str((ARTIFACTS.mkdir(exist_ok=True), ARTIFACTS / "hostile.png")[1]), full_page=True)
        assert page.errors == []
        # and the report of the same study, opened from disk
        from phalanx.range.report import write_report

        summary = json.loads((out / "summary.json").read_text())
        records = {r["name"]: [json.loads(x) for x in (out / r["ledger"]["folder"] / "metrics.jsonl").read_text().splitlines()]
                   for r in summary["runs"]}
        write_report(out, summary, records)
        page.goto((out / "report.html").as_uri())
        page.wait_for_selector("#phalanx-dashboard[data-updates]", timeout=30_000)
        assert HOSTILE_RUN in page.inner_text("body")
        assert page.evaluate("window.__pwned") is None and page.errors == []
    finally:
        served.close()
