"""The committee topology in the simulation: certified rounds, crashed and Byzantine validators, a
censoring sequencer caught by its missed promise and rotated out, and the run's ledger replays."""

from __future__ import annotations

import json

import pytest

from phalanx.ledger import audit
from phalanx.range.runner import run_study
from phalanx.range.scenario import ScenarioError, load_study

STUDY = """\
study: committee
seed: 0
rounds: 3
data: {dataset: digits, nodes: 6, partition: iid, train_samples: 240, test_samples: 100}
model: logistic
train: {epochs: 1, batch_size: 16, lr: 0.1, strategy: loop}
aggregator: median
runs:
  - name: star
    topology: {name: star, weighting: uniform}
  - name: committee
    topology: {name: committee, validators: 4}
  - name: hostile
    topology: {name: committee, validators: 7, crashed: 1, byzantine: 1, behaviour: double_sign, censor: 2}
  - name: too-many-down
    topology: {name: committee, validators: 4, crashed: 1, byzantine: 1, behaviour: silent}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("committee")
    (folder / "study.yaml").write_text(STUDY)
    name, description, runs = load_study(folder / "study.yaml")
    summary = run_study(name, description, runs, folder / "out", progress=False)
    rows = {r: [json.loads(x) for x in (folder / "out" / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("star", "committee", "hostile", "too-many-down")}
    return folder / "out", {r["name"]: r for r in summary["runs"]}, rows


def test_an_honest_committee_certifies_the_star_s_aggregate(study):
    _, runs, rows = study
    assert all(r["committee_certified"] and r["committee_view"] == 0 for r in rows["committee"])
    assert [r["accuracy"] for r in rows["committee"]] == [r["accuracy"] for r in rows["star"]]
    assert runs["committee"]["committee"]["certified_rounds"] == 3


def test_f_faulty_validators_and_a_censor_are_survived_and_the_censor_rotated_out(study):
    out, runs, rows = study
    hostile = runs["hostile"]["committee"]
    assert hostile["certified_rounds"] == 3 and hostile["quorum"] == 5
    assert hostile["evidence"].get("double_sign", 0) >= 1 and hostile["evidence"]["missed_promise"] == 1
    assert hostile["rotated_out"] == [2]
    assert sum(r["censored"] for r in rows["hostile"]) == 1  # once rotated out, it never sequences again
    assert all(r["availability"] == 1.0 for r in rows["hostile"])
    report = audit(out / "hostile" / "ledger.db")
    assert report.ok, report


def test_more_than_f_faulty_validators_leave_every_round_uncertified(study):
    _, runs, rows = study
    assert all(not r["committee_certified"] and r["availability"] == 0.0 for r in rows["too-many-down"])
    assert runs["too-many-down"]["committee"]["certified_rounds"] == 0


def test_a_committee_that_does_not_fit_is_refused_in_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text(STUDY.replace("crashed: 1, byzantine: 1, behaviour: silent",
                                                     "crashed: 3, byzantine: 2"))
    with pytest.raises(ScenarioError, match="3 crashed and 2 Byzantine validators do not fit in 4"):
        load_study(tmp_path / "bad.yaml")
