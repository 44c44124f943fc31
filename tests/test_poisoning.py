"""Data poisoning, backdoors, Sybil collusion, free riding and on-off: each on a case where a wrong
implementation would show."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pydantic
import pytest
import torch

import phalanx
from phalanx.attacks import DATA_ATTACKS, UPDATE_ATTACKS, AttackView, DataSite
from phalanx.attacks.backdoor import BadNets, DBA, bar_masks, square_mask, stamp
from phalanx.attacks.free_rider import FreeRider
from phalanx.attacks.on_off import OnOff
from phalanx.attacks.simple import LabelFlip
from phalanx.attacks.sybil import Sybil, mean_pair_cosine


def view(own, honest=None, round=1, last_delta=None, seed=0):
    return AttackView(round=round, own_updates=own, receivers=torch.tensor([-1]),
                      generator=torch.Generator().manual_seed(seed), honest_updates=honest,
                      last_delta=last_delta)


# ------------------------------------------------------------------------------------ label flip
def test_label_flip_modes_by_hand():
    y = torch.tensor([1, 1, 3, 7])
    x = torch.zeros(4, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    assert LabelFlip(mode="one_to_one", source=1, target=7).poison(x, y, 10, g)[1].tolist() == [7, 7, 3, 7]
    assert LabelFlip(mode="all_to_one", target=7).poison(x, y, 10, g)[1].tolist() == [7, 7, 7, 7]
    flipped = LabelFlip(mode="random").poison(x, y, 10, g)[1]
    assert bool((flipped != y).all()) and int(flipped.max()) < 10


def test_label_flip_fraction_flips_about_that_share():
    y = torch.ones(2000, dtype=torch.int64)
    out = LabelFlip(source=1, target=7, fraction=0.25).poison(torch.zeros(2000, 1), y, 10,
                                                                 torch.Generator().manual_seed(1))[1]
    share = float((out == 7).double().mean())
    assert 0.22 < share < 0.28 and set(out.tolist()) == {1, 7}


def test_label_flip_success_set_is_the_source_class_or_everything_not_the_target():
    x = torch.arange(5.0)[:, None]
    y = torch.tensor([1, 7, 1, 3, 7])
    one = LabelFlip(source=1, target=7).success_set(x, y, DataSite())
    assert one.target == 7 and one.inputs[:, 0].tolist() == [0.0, 2.0]
    every = LabelFlip(mode="all_to_one", target=7).success_set(x, y, DataSite())
    assert every.inputs[:, 0].tolist() == [0.0, 2.0, 3.0]
    assert LabelFlip(mode="random").success_set(x, y, DataSite()) is None


def test_label_flip_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        LabelFlip(source=1, target=12).poison(torch.zeros(2, 1), torch.ones(2, dtype=torch.int64), 10,
                                              torch.Generator())


# ------------------------------------------------------------------------------------ backdoors
def test_square_trigger_sits_in_the_bottom_right_corner():
    mask = square_mask(8, 8, size=2, gap=1)
    assert mask.nonzero().tolist() == [[5, 5], [5, 6], [6, 5], [6, 6]]


def test_dba_pieces_are_disjoint_and_make_up_the_global_trigger():
    pieces = bar_masks(28, 28, parts=4, size=4, gap=2)
    assert all(int(p.sum()) == 4 for p in pieces)
    for a, b in itertools.combinations(pieces, 2):
        assert not bool((a & b).any())
    dba = DBA(parts=4, size=4, gap=2)
    assert torch.equal(dba.trigger(28, 28), torch.stack(pieces).any(0))
    # the centralized attack with the same layout stamps the same global trigger
    assert torch.equal(BadNets(pattern="bars", parts=4, size=4, gap=2).trigger(28, 28), dba.trigger(28, 28))


def test_badnets_stamps_a_share_relabels_it_and_leaves_the_rest():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1000, 1, 8, 8)
    y = torch.full((1000,), 3)
    attack = BadNets(target=0, fraction=0.3, size=2, gap=1)
    px, py = attack.poison_node(x, y, 10, g, DataSite(high=2.5))
    poisoned = py == 0
    assert 0.25 < float(poisoned.double().mean()) < 0.35
    mask = square_mask(8, 8, 2, 1)
    assert bool((px[poisoned][:, 0][:, mask] == 2.5).all())  # the trigger, at the data set's white
    assert bool((px[poisoned][:, 0][:, ~mask] == 0).all())
    assert bool((px[~poisoned] == 0).all()) and bool((py[~poisoned] == 3).all())


def test_dba_gives_each_attacker_its_own_piece():
    x = torch.zeros(50, 1, 28, 28)
    y = torch.full((50,), 3)
    dba = DBA(target=0, fraction=1.0)
    pieces = bar_masks(28, 28, 4, 4, 2)
    for rank in range(6):
        px, _ = dba.poison_node(x, y, 10, torch.Generator().manual_seed(rank), DataSite(rank=rank, high=1.0))
        assert torch.equal(px[0, 0] == 1.0, pieces[rank % 4])


def test_backdoor_success_set_stamps_the_whole_trigger_on_non_target_images():
    x = torch.zeros(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    got = BadNets(target=0, size=2, gap=1).success_set(x, y, DataSite(high=1.0))
    assert got.target == 0 and got.inputs.shape[0] == 2
    assert torch.equal(got.inputs[0, 0] == 1.0, square_mask(8, 8, 2, 1))
    assert torch.equal(stamp(x, square_mask(8, 8, 2, 1), 1.0)[1], got.inputs[0])


def test_backdoor_needs_images_and_a_target_in_range():
    with pytest.raises(ValueError, match="needs images"):
        BadNets().poison_node(torch.zeros(3, 64), torch.zeros(3, dtype=torch.int64), 10, torch.Generator(),
                              DataSite())
    with pytest.raises(ValueError, match="out of range"):
        DBA(target=11).poison_node(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.int64), 10,
                                   torch.Generator(), DataSite())


# ------------------------------------------------------------------------------------ sybils
def test_mean_pair_cosine_by_hand():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pair_cosine(rows) == pytest.approx((0 + 2 ** -0.5 + 2 ** -0.5) / 3)


def test_calibrated_sybils_match_honest_norms_and_pair_cosines_exactly():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(200, generator=g, dtype=torch.float64)
    honest = base + 0.8 * torch.randn(12, 200, generator=g, dtype=torch.float64)
    own = torch.randn(200, generator=g, dtype=torch.float64) + 0.05 * torch.randn(5, 200, generator=g,
                                                                                   dtype=torch.float64)
    out = Sybil(mode="calibrated").craft(view(own, honest))[:, 0]
    target_norm = honest.norm(dim=1).median()
    assert torch.allclose(out.norm(dim=1), target_norm.expand(5), rtol=1e-9)
    rho = mean_pair_cosine(honest)
    unit = out / out.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    off = cos[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, rho), atol=1e-9)
    payload = own.mean(0) / own.mean(0).norm()
    assert torch.allclose(unit @ payload, torch.full((5,), rho ** 0.5, dtype=torch.float64), atol=1e-9)


def test_identical_sybils_all_send_the_mean_of_their_own_updates():
    own = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = Sybil(mode="identical").craft(view(own, own))
    assert out.shape == (2, 1, 2) and torch.equal(out[:, 0], torch.tensor([[2.0, 3.0]] * 2))


def test_persistent_sybil_noise_repeats_across_rounds_and_fresh_noise_does_not():
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(8, 50, generator=g)
    own = torch.randn(3, 50, generator=g)
    keep = Sybil(persistent=True)
    a = keep.craft(view(own, honest, round=1, seed=1))
    b = keep.craft(view(own, honest, round=2, seed=2))
    assert torch.allclose(a, b)
    fresh = Sybil()
    assert not torch.allclose(fresh.craft(view(own, honest, seed=1)), fresh.craft(view(own, honest, seed=2)))


# ------------------------------------------------------------------------------------ free riders
def test_free_rider_modes():
    own = torch.ones(2, 3)
    assert torch.equal(FreeRider(mode="zero").craft(view(own)), torch.zeros(2, 1, 3))
    noisy = FreeRider(mode="noise", std=0.1, decay=0.5).craft(view(torch.zeros(2, 4000), round=4))
    assert float(noisy.std()) == pytest.approx(0.05, rel=0.05)  # 0.1 * 4 ** -0.5
    delta = torch.tensor([0.2, -0.1, 0.0])
    assert torch.equal(FreeRider(mode="delta", std=0).craft(view(own, last_delta=delta))[:, 0],
                       delta.expand(2, 3))
    with pytest.raises(ValueError, match="star"):
        FreeRider(mode="delta").craft(view(own))


def test_stale_free_rider_replays_its_first_update():
    rider = FreeRider(mode="stale")
    first = rider.craft(view(torch.full((2, 3), 1.0)))
    later = rider.craft(view(torch.full((2, 3), 9.0), round=5))
    assert torch.equal(first, later) and torch.equal(first, torch.ones(2, 1, 3))


# ------------------------------------------------------------------------------------ on-off
def test_on_off_attacks_only_in_its_on_phase():
    attack = OnOff(attack={"name": "sign_flip", "scale": 2.0}, attacking=2, honest=3)
    assert [r for r in range(1, 16) if attack.attacking(r)] == [4, 5, 9, 10, 14, 15]
    own = torch.tensor([[1.0, -1.0]])
    assert torch.equal(attack.craft(view(own, round=3))[:, 0], own)
    assert torch.equal(attack.craft(view(own, round=4))[:, 0], -2 * own)
    starts_on = OnOff(attack="sign_flip", attacking=1, honest=2, start="attacking")
    assert [r for r in range(1, 7) if starts_on.attacking(r)] == [1, 4]


def test_on_off_takes_the_wrapped_attacks_knowledge_and_refuses_bad_specs():
    assert OnOff(attack="alie").knowledge == "honest_updates"
    with pytest.raises(ValueError, match="cannot wrap itself"):
        OnOff(attack="on_off")
    with pytest.raises(pydantic.ValidationError):
        UPDATE_ATTACKS.validate("on_off", {"attacking": 0})


def test_new_attacks_are_registered():
    assert {"sybil", "free_rider", "on_off"} <= set(UPDATE_ATTACKS.names())
    assert {"label_flip", "badnets", "dba"} <= set(DATA_ATTACKS.names())


# ------------------------------------------------------------------------------------ layering
@pytest.mark.parametrize("package,allowed", [
    ("attacks", ("phalanx.attacks", "phalanx.aggregate", "phalanx.data", "phalanx.models", "phalanx.core")),
    ("defenses", ("phalanx.defenses", "phalanx.aggregate", "phalanx.core")),
])
def test_package_imports_follow_the_architecture(package, allowed):
    root = Path(phalanx.__file__).parent / package
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("phalanx"):
                    assert name.startswith(allowed), f"{package}/{path.name} imports {name}"
