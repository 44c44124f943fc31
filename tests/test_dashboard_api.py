"""The dashboard's API on a small finished study, and on hostile folders: bad run dirs, path
traversal, huge and broken files, each refused with a one-line error."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from dashboard_helpers import copy_study, small_study
from fastapi.testclient import TestClient

from phalanx.core.merkle import verify_consistency
from phalanx.dashboard import source as source_mod
from phalanx.dashboard.app import CSP, create_app
from phalanx.dashboard.source import Source, SourceError
from phalanx.dashboard.verifier import build, csp_for, digest, verifier_html
from phalanx.ledger import Checkpoint, Policy, parse_note, verify_receipt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study() -> Path:
    return small_study()


@pytest.fixture(scope="module")
def client(study) -> TestClient:
    return TestClient(create_app(study))


def test_the_overview_lists_the_runs_with_their_ledgers(client):
    r = client.get("/api/overview")
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    ov = r.json()
    assert ov["kind"] == "study" and ov["study"] == "small"
    assert [x["name"] for x in ov["runs"]] == ["star, sybils", "gossip"]
    assert all(x["ledger"] for x in ov["runs"]) and ov["runs"][0]["malicious"] == 3


def test_metrics_are_read_from_a_line_on(client):
    rows = client.get("/api/runs/1/metrics").json()
    assert [x["round"] for x in rows["rows"]] == [1, 2, 3, 4, 5, 6] and rows["next"] == 6
    tail = client.get("/api/runs/1/metrics?start=4").json()
    assert [x["round"] for x in tail["rows"]] == [5, 6]


def test_the_network_has_every_role_reputation_and_the_topology(client, study):
    star = client.get("/api/runs/0/network").json()
    roles = [n["role"] for n in star["nodes"]]
    summary = json.loads((study / "summary.json").read_text())["runs"][0]
    quarantined = {d["node"] for d in summary["guard"]["decisions"] if d["action"] == "quarantine"}
    assert roles.count("server") == 1 and roles.count("validator") == 4
    assert {n["id"] for n in star["nodes"] if n["role"] in ("malicious", "quarantined")} >= {10, 11, 12} - quarantined
    assert {n["id"] for n in star["nodes"] if n["role"] == "quarantined"} == quarantined
    # the guard's final reputation per node reaches the page (the star's server scores every node)
    assert all(isinstance(n["reputation"], float) for n in star["nodes"][:13])
    assert star["topology"] == "star" and [0, 13] in star["edges"]
    ring = client.get("/api/runs/1/network").json()
    assert ring["topology"] == "gossip" and len(ring["edges"]) == 10
    assert {n["id"] for n in ring["nodes"] if n["malicious"]} == set(summary_malicious(study, 1))


def summary_malicious(study: Path, i: int) -> list[int]:
    return json.loads((study / "summary.json").read_text())["runs"][i]["malicious"]


def test_a_node_history_joins_the_summary_and_the_ledger(client):
    h = client.get("/api/runs/0/nodes/11").json()
    assert h["node"]["malicious"] and h["ledger"]["found"]
    assert h["ledger"]["registration"]["admission"] == "open"
    assert [u["round"] for u in h["ledger"]["updates"]][:1] == [2]  # the Sybils arrive at round 2
    assert client.get("/api/runs/0/nodes/999").status_code == 400


def test_the_ledger_explorer_pages_entries_and_lists_checkpoints(client):
    page = client.get("/api/runs/0/ledger?start=0&limit=5").json()
    assert page["entries"][0]["type"] == "node_registration" and len(page["entries"]) == 5
    only = client.get("/api/runs/0/ledger?type=aggregate_record").json()
    assert {e["type"] for e in only["entries"]} == {"aggregate_record"} and only["total"] == 7
    cps = client.get("/api/runs/0/ledger/checkpoints").json()["checkpoints"]
    assert cps and all(sum(s["kind"] == "cosignature" for s in c["signatures"]) == 4 for c in cps)
    model = client.get("/api/runs/0/ledger/models").json()["models"][0]["model"]
    trace = client.get(f"/api/runs/0/ledger/trace/{model}").json()
    assert trace["rounds"][0] == 6 and trace["records"][0]["inputs"]


def test_a_bundle_verifies_with_the_ledger_code_and_its_consistency_proofs_hold(client, study):
    bundle = client.get("/api/runs/0/ledger/bundle/40").json()
    policy = Policy.parse((study / "star-sybils" / "policy.txt").read_text())
    ok = verify_receipt(bundle["receipt"], policy)
    assert ok.entry.type == "update_commitment" and len(ok.cosigners) == 4
    for other in bundle["consistency"]:
        old = Checkpoint.parse(parse_note(other["checkpoint"]).text)
        verify_consistency(old.size, ok.checkpoint.size, [base64.b64decode(h) for h in other["proof"]],
                           old.root, ok.checkpoint.root)


@pytest.mark.parametrize("path, code, message", [
    ("/api/runs/7/network", 404, "no run 7"),
    ("/api/runs/x/metrics", 400, "run: expected a whole number"),
    ("/api/runs/0/metrics?start=-1", 400, "out of range"),
    ("/api/runs/0/ledger/entries/5000", 404, "no entry 5000"),
    ("/api/runs/0/ledger/trace/zz", 400, "hex"),
    ("/api/runs/0/ledger/trace/" + "00" * 32, 404, "no aggregate record"),
    ("/api/runs/0/ledger?limit=0", 400, "out of range"),
    ("/api/grid", 404, "no grid.json"),
    ("/api/runs/..%2F..%2Fetc/network", 404, "no such page"),
    ("/api/runs/0%2F..%2F..%2Fetc/metrics", 404, "no such page"),
    ("/../../etc/passwd", 404, "no such page"),
    ("/static/../../pyproject.toml", 404, "no such page"),
])
def test_bad_requests_get_one_line_errors(client, path, code, message):
    r = client.get(path)
    assert r.status_code == code and message in r.json()["error"]
    assert r.headers["content-security-policy"] == CSP


def test_bad_run_folders_are_refused_in_one_line(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        Source(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SourceError, match="not a folder"):
        Source(tmp_path / "file")
    with pytest.raises(SourceError, match="not an output folder"):
        Source(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    r = TestClient(create_app(tmp_path)).get("/api/overview")
    assert r.status_code == 400 and "summary.json: not valid JSON" in r.json()["error"]
    (tmp_path / "summary.json").write_text('{"runs": 3}')
    assert "not a study summary" in TestClient(create_app(tmp_path)).get("/api/overview").json()["error"]


def test_the_command_refuses_a_bad_folder_with_exit_code_2(cli, tmp_path):
    result = cli("dashboard", str(tmp_path / "nope"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder"]


def test_symlinks_and_folder_names_cannot_lead_outside(tmp_path):
    out = copy_study(tmp_path / "out")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "metrics.jsonl").write_text('{"round": 1, "accuracy": 0.99}\n')
    os.symlink(secret, out / "evil")
    summary = json.loads((out / "summary.json").read_text())
    summary["runs"][1]["ledger"]["folder"] = "../secret"
    summary["runs"][0]["ledger"]["folder"] = "evil"
    (out / "summary.json").write_text(json.dumps(summary))
    c = TestClient(create_app(out))
    assert c.get("/api/runs/1/metrics").json()["rows"] == []  # the folder ../secret is not read
    assert c.get("/api/runs/0/metrics").json()["rows"] == []  # nor the symlink out of the folder
    assert Source(out).run(0).folder is None and Source(out).run(1).folder is None


def test_huge_and_broken_files_are_refused_or_skipped(tmp_path, monkeypatch):
    out = copy_study(tmp_path / "out")
    metrics = out / "gossip" / "metrics.jsonl"
    with metrics.open("a") as fh:
        fh.write('{"round": 7, "accuracy": NaN}\n[1, 2]\nnot json\n{"round": 8, "accu')  # the last line is torn
    c = TestClient(create_app(out))
    tail = c.get("/api/runs/1/metrics?start=6").json()
    assert tail["rows"] == [{"round": 7, "accuracy": None}] and tail["skipped"] == 2 and tail["next"] == 9
    monkeypatch.setattr(source_mod, "MAX_METRICS_BYTES", 1000)
    r = c.get("/api/runs/1/metrics")
    assert r.status_code == 400 and "is more than the 1000 this reads" in r.json()["error"]
    monkeypatch.setattr(source_mod, "MAX_JSON_BYTES", 100)
    fresh = TestClient(create_app(out))
    r = fresh.get("/api/overview")
    assert r.status_code == 400 and "summary.json" in r.json()["error"] and "more than the 100" in r.json()["error"]


def test_a_running_study_is_followed_line_by_line(tmp_path):
    run = tmp_path / "live" / "star"
    run.mkdir(parents=True)
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"round": 1, "accuracy": 0.1}\n{"round": 2, "acc')
    src = Source(tmp_path / "live")
    assert src.kind == "running" and [r.name for r in src.runs()] == ["star"]
    v1 = src.version()
    assert [x["round"] for x in src.metrics(0).rows] == [1]
    with metrics.open("a") as fh:
        fh.write('uracy": 0.2}\n')
    assert [x["round"] for x in src.metrics(0, 1).rows] == [2] and src.version() != v1


def test_a_tampered_ledger_is_still_shown_and_its_bundle_does_not_verify(tmp_path):
    out = copy_study(tmp_path / "out")
    db = out / "star-sybils" / "ledger.db"
    with sqlite3.connect(db) as con:
        data = con.execute("SELECT data FROM entries WHERE idx = 40").fetchone()[0]
        con.execute("UPDATE entries SET data = ? WHERE idx = 40", (data[:-1] + bytes([data[-1] ^ 1]),))
    c = TestClient(create_app(out))
    assert c.get("/api/runs/0/ledger?start=40&limit=1").status_code == 200
    bundle = c.get("/api/runs/0/ledger/bundle/40").json()
    policy = Policy.parse((out / "star-sybils" / "policy.txt").read_text())
    with pytest.raises(ValueError):
        verify_receipt(bundle["receipt"], policy)


def test_grid_heat_maps_come_from_grid_json(tmp_path):
    (tmp_path / "grid.json").write_text((REPO / "benchmarks/results/grid-default/grid.json").read_text())
    g = TestClient(create_app(tmp_path)).get("/api/grid").json()
    star = g["maps"][0]
    assert star["topology"] == "star" and "ipm eps=10" in star["attacks"]
    mean = next(r for r in star["rows"] if r["defense"] == "mean")
    assert mean["worst_attack"] == "ipm eps=10" and mean["worst"] < 0.1 < mean["cells"]["none"]


def test_the_verifier_is_served_as_shipped_and_its_csp_hashes_are_built():
    path = REPO / "src/phalanx/dashboard/static/verifier.html"
    assert verifier_html() == path.read_bytes()
    assert not build(path), "verifier.html changed: run python -m phalanx.dashboard.verifier"
    html = path.read_text()
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert meta == csp_for(html) and "'unsafe-inline'" not in meta and "connect-src 'none'" in meta
    assert " on" not in re.sub(r"<script>.*?</script>", "", html, flags=re.S).lower().replace("one ", "")


def test_the_readme_publishes_the_verifiers_sha256():
    readme = (REPO / "README.md").read_text()
    assert f"`{digest()}`" in readme
    assert hashlib.sha256(verifier_html()).hexdigest() == digest()


def test_the_cli_writes_a_bundle_and_refuses_a_missing_ledger(cli, study, tmp_path):
    result = cli("ledger", "bundle", str(study / "gossip" / "ledger.db"), "3", "--out", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    bundle = json.loads((tmp_path / "b.json").read_text())
    assert bundle["format"] == "phalanx.ledger/bundle/v1" and bundle["index"] == 3
    missing = cli("ledger", "bundle", str(tmp_path / "none.db"), "0")
    assert missing.returncode == 2 and "no such ledger file" in missing.stderr
