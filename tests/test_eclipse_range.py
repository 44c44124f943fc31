"""The eclipse attack as a range study: the study file runs, its section of the report holds the
table and the view-share curve, and a bad value of its config is a one-line error naming it."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from phalanx.range.runner import run_study
from phalanx.range.scenario import ScenarioError, load_study

STUDY = REPO / "src/phalanx/range/studies/eclipse.yaml"
SMALL = {"eclipse": {"honest": 20, "sybils": 200, "view": 4, "pushes": 4, "rounds": 6, "seeds": [0],
                     "samplers": ["push_pull", "basalt"]}}


def test_the_eclipse_study_writes_its_table_and_curve_into_the_report(tmp_path):
    name, description, runs = load_study(STUDY, SMALL)
    summary = run_study(name, description, runs, tmp_path, progress=False)
    table = summary["runs"][0]["eclipse"]["table"]
    assert [row["sampler"] for row in table] == ["push_pull", "basalt"]
    assert all(len(row["share_curve"]) == 6 for row in table)
    assert table[0]["share_final"] > table[1]["share_final"]  # push-pull is taken over, Basalt is not
    html = (tmp_path / "report.html").read_text()
    section = html[html.index('<h2 id="eclipse">'):]
    section = section[: section.index("<h2", 10)]
    assert "<td>push_pull</td>" in section and "<td>basalt</td>" in section
    assert "attacker share of the victim&#39;s view per round, per sampler" in section  # the curve's figure
    assert "data:image/png;base64," in section
    json.dumps(summary)  # the summary stays plain JSON


@pytest.mark.parametrize("override, problem", [
    ({"view": 0}, "eclipse.view"),
    ({"view": 30}, "eclipse.view: the victim's first view is drawn from the 20 honest peers"),
    ({"samplers": ["basalt", "gossipsub"]}, "eclipse.samplers.1"),
    ({"samplers": ["basalt", "basalt"]}, "eclipse.samplers: a sampler is named twice"),
    ({"rounds": 0}, "eclipse.rounds"),
    ({"spies": 3}, "eclipse.spies"),
])
def test_a_bad_eclipse_config_is_a_one_line_error_naming_the_field(override, problem):
    with pytest.raises(ScenarioError, match=problem) as e:
        load_study(STUDY, {"eclipse": {**SMALL["eclipse"], **override}})
    assert "\n" not in str(e.value)
