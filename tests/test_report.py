"""The study report: one offline, escaped, deterministic HTML page with a PNG per figure."""

from __future__ import annotations

import base64
import copy
import re

import matplotlib.pyplot as plt
import pytest

from phalanx.range.report import mpl_text, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CLASSES = ["T-shirt/top", "Trouser", "Pullover"]
CSP_TAG = ('<meta http-equiv="Content-Security-Policy" '
           "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">")


def _markup(html: str) -> str:
    """The page without its three script elements (the dashboard's and the verifier's code, and the
    JSON data block), whose text names metrics and holds escaped data: what is left is markup."""
    return re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)


def _partition(sizes=(30, 20, 10, 40), classes=CLASSES) -> dict:
    return {
        "sizes": list(sizes),
        "label_histogram": [[(s * (i + j + 1)) % 17 for j in range(len(classes))]
                            for i, s in enumerate(sizes)],
        "classes": list(classes),
        "partitioner": "dirichlet",
        "params": {"alpha": 0.5},
    }


def _records(rounds: int, gossip: bool) -> list[dict]:
    """Accuracy evaluated every other round (null otherwise), one null loss, an extra metric."""
    out = []
    for r in range(1, rounds + 1):
        acc = 0.3 + 0.04 * r if r % 2 == 0 else None
        out.append({
            "round": r,
            "accuracy": acc,
            "loss": None if r == 3 else 2.0 / r,
            "accuracy_min": None if acc is None else (acc - 0.05 if gossip else acc),
            "accuracy_max": None if acc is None else (acc + 0.03 if gossip else acc),
            "consensus_distance": 1.0 / r if gossip else None,
            "availability": 1.0 if r < 5 or gossip else 0.0,
            "alive": 4,
            "participants": 4,
            "wall_time_s": 0.1,
            "elapsed_s": 0.1 * r,
            "attack_success": 0.1 * (r % 3) if gossip else None,
        })
    return out


def _run(name: str, records: list[dict], *, gossip: bool, crash: bool = False,
         partition: dict | None = None) -> dict:
    """A run's summary entry; a star with ``crash`` loses its server at round 5."""
    crash_event = {"round": 5, "kind": "crash", "target": "server", "text": "server crashes"}
    nodes = len((partition or _partition())["sizes"])
    return {
        "name": name,
        "topology": "gossip" if gossip else "star",
        "description": f"{name} run",
        "config": {"topology": {"name": "gossip" if gossip else "star"}, "rounds": len(records),
                   "note": "<b>bold</b>"},
        "config_sha256": ("b" if gossip else "a") * 64,
        "final": [r for r in records if r["accuracy"] is not None][-1],
        "events": [crash_event] if crash else [],
        "partition": partition or _partition(),
        "graph": None if not gossip else {
            "nodes": nodes, "edges": [[i, (i + k) % nodes] for i in range(nodes) for k in (1, 2)]},
    }


def _study(names=("star", "gossip"), rounds: int = 8) -> tuple[dict, dict]:
    """Two runs: a star whose server crashes at round 5, and a gossip run with a graph."""
    star, gossip = names
    records = {star: _records(rounds, gossip=False), gossip: _records(rounds, gossip=True)}
    runs = [_run(star, records[star], gossip=False, crash=True),
            _run(gossip, records[gossip], gossip=True)]
    manifest = {
        "phalanx": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "numpy": "2.0",
        "platform": "linux", "commit": "abc123", "config_sha256": "c" * 64, "seeds": [0, 1],
        "device": "cpu", "started": "2025-01-02T03:04:05Z", "wall_time_s": 12.5,
    }
    summary = {"study": "default", "description": "two runs side by side", "manifest": manifest,
               "runs": runs}
    return summary, records


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b64, validate=True) for b64 in IMG.findall(html)]


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "out"
    path = write_report(out, *_study())
    assert path == out / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_is_a_self_contained_offline_page(html):
    from phalanx.dashboard.verifier import source_hash

    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)
    assert meta.startswith(CSP_TAG.split('content="')[1].rstrip('">') + "; script-src 'sha256-")
    # the only URL is the SVG namespace the dashboard's script names (not a resource)
    bare = html.replace("http://www.w3.org/2000/svg", "")
    assert "http://" not in bare and "https://" not in bare
    # three scripts: the JSON data block (never run), the dashboard's and the verifier's, each
    # allowed by its hash and by nothing else; no inline event handler anywhere
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert [a for a, _ in scripts] == [' type="application/json" id="phalanx-data"', "", ""]
    assert meta.endswith(f"script-src {source_hash(scripts[1][1])} {source_hash(scripts[2][1])}")
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, flags=re.I)
    # Every resource reference is a data: URI or an in-page anchor.
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'src="([^"]*)"', html))
    assert all(v.startswith("#") for v in re.findall(r'href="([^"]*)"', html))


def test_report_embeds_one_decodable_png_per_figure(html):
    # accuracy, loss, availability, consensus, attack_success, one shared partition, one graph
    images = _images(html)
    assert len(images) == 7
    assert all(png.startswith(PNG_MAGIC) for png in images)
    assert html.count('<img ') == 7


def test_extra_numeric_metric_gets_its_own_plot(tmp_path, html):
    assert "<code>attack_success</code>" in html
    summary, records = _study()
    for run in records.values():
        for record in run:
            del record["attack_success"]
    without = write_report(tmp_path / "without", summary, records).read_text(encoding="utf-8")
    assert len(_images(without)) == 6
    assert "attack_success" not in _markup(without)


def test_runs_with_different_partitions_get_one_picture_each(tmp_path):
    summary, records = _study()
    summary["runs"][1]["partition"] = _partition(sizes=(50, 5, 5, 40))
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert len(_images(html)) == 8


def test_summary_table_events_config_and_manifest_are_shown(html):
    assert "<h1>default</h1>" in html
    assert html.count("</span>star</") == 3  # summary table, events table, configuration
    assert html.count("</span>gossip</") == 3  # summary table, attack success (detection table), configuration
    assert ">0.620<" in html  # final accuracy of both runs (round 8: 0.3 + 0.04 * 8)
    assert ">0.570<" in html  # the gossip run's min honest accuracy
    assert ">0.125<" in html  # the gossip run's consensus distance at its final round
    assert ">0.8 s<" in html  # wall time: the last elapsed_s
    assert "server crashes" in html
    assert "a" * 64 in html and "b" * 64 in html and "c" * 64 in html
    assert "abc123" in html and "--seed 1" in html
    assert "2025-01-02T03:04:05Z" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html


def test_data_from_the_study_is_escaped_never_raw(tmp_path):
    evil = "<script>alert(1)</script>"
    summary, records = _study(names=("star", evil))
    summary["description"] = '<img src="https://example.com/x.png">'
    summary["runs"][0]["events"][0]["text"] = "<i>server</i> crashes"
    summary["manifest"]["platform"] = "<svg onload=x>"
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert "</span>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    assert evil not in html and "<script" not in _markup(html).lower()
    assert "&lt;img src=&#34;https://example.com/x.png&#34;&gt;" in html
    assert "<i>server</i>" not in html and "<svg" not in _markup(html)
    # in the data block the dashboard draws from, the same text is JSON with <, > and & escaped
    data = re.search(r'<script type="application/json" id="phalanx-data">(.*?)</script>', html, flags=re.S).group(1)
    assert "<" not in data and "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in data


def test_null_and_missing_values_do_not_crash(tmp_path):
    summary, records = _study()
    for record in records["star"]:
        record.update(loss=None, availability=None, accuracy=float("nan"))
    records["gossip"][0] = {"round": 1}
    records["orphan"] = [{"round": 1, "accuracy": None}, {"round": 2}]  # records without summary
    del summary["runs"][0]["final"]
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert "orphan" in html
    assert all(png.startswith(PNG_MAGIC) for png in _images(html))
    assert html.count(">—<") >= 3  # the star run's and the orphan's missing final values


def test_a_metric_no_run_recorded_gets_no_plot(tmp_path):
    summary, records = _study()
    for run in records.values():
        for record in run:
            record["loss"] = None
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert len(_images(html)) == 6


def test_names_matplotlib_would_misread_are_drawn(tmp_path):
    # "$...$" is mathtext for matplotlib and "\frac" alone is a parse error there;
    # a leading underscore hides a legend entry.
    summary, records = _study(names=(r"cost $\frac$ x", "_gossip"))
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert len(_images(html)) == 7
    assert "cost $\\frac$ x" in html


def test_labels_are_escaped_for_matplotlib():
    assert mpl_text("a $x$ b") == r"a \$x\$ b"
    assert not mpl_text("_gossip").startswith("_")  # a leading "_" would hide the legend entry
    assert mpl_text("gossip") == "gossip"


def test_events_and_the_min_max_band_are_drawn_on_the_accuracy_plot(tmp_path):
    summary, records = _study()

    def accuracy_png(name: str) -> bytes:
        return _images(write_report(tmp_path / name, summary, records).read_text("utf-8"))[0]

    accuracy = accuracy_png("a")
    summary["runs"][0]["events"] = []
    no_event = accuracy_png("b")
    for record in records["gossip"]:
        record["accuracy_min"] = record["accuracy_max"] = record["accuracy"]
    no_band = accuracy_png("c")
    assert len({accuracy, no_event, no_band}) == 3


def test_every_figure_is_closed(tmp_path):
    before = plt.get_fignums()
    write_report(tmp_path, *_study())
    assert plt.get_fignums() == before


def test_same_study_gives_identical_bytes(tmp_path):
    summary, records = _study()
    first = write_report(tmp_path / "a", summary, records).read_bytes()
    again = copy.deepcopy(summary), copy.deepcopy(records)
    second = write_report(tmp_path / "b", *again).read_bytes()
    assert first == second


def test_a_four_run_thirty_round_study_stays_small(tmp_path):
    # The first real study: 4 runs x 30 rounds, 40 nodes, 10 classes, two gossip graphs.
    summary, _ = _study()
    partition = _partition(sizes=range(300, 2300, 50), classes=[f"class {i}" for i in range(10)])
    records, runs = {}, []
    for name, gossip, crash in [("star", False, False), ("star, server crash", False, True),
                                ("gossip", True, False), ("gossip, node crash", True, True)]:
        records[name] = _records(30, gossip=gossip)
        runs.append(_run(name, records[name], gossip=gossip, crash=crash, partition=partition))
    summary["runs"] = runs
    html = write_report(tmp_path, summary, records).read_text(encoding="utf-8")
    assert len(_images(html)) == 4 + 1 + 1 + 2  # curves, attack_success, one partition, two graphs
    assert len(html.encode()) < 1_500_000


def test_privacy_spent_gets_its_curve_and_its_column(tmp_path, html):
    # Arrange: the gossip run spends epsilon each round; the star run has no privacy at all
    summary, records = _study()
    for r in records["gossip"]:
        r["epsilon"], r["epsilon_mean"] = 0.25 * r["round"], 0.2 * r["round"]

    # Act
    with_dp = write_report(tmp_path / "dp", summary, records).read_text(encoding="utf-8")

    # Assert: one more picture (not two: epsilon_mean is not a plot of its own), the final
    # epsilon in the summary table, and nothing of the kind without DP
    assert len(_images(with_dp)) == len(_images(html)) + 1
    assert "Privacy spent" in with_dp and "Privacy spent" not in _markup(html)
    assert '<td class="num">2</td>' in with_dp  # 0.25 x 8 rounds, the last record's
    assert "epsilon_mean" not in _markup(with_dp)
