"""SecAgg and SecAgg+ end to end: the sum is bit-exact mod 2^k with dropouts at every phase, up
to n - t of them; one more aborts; a masked input looks uniform; SecAgg+ gives the same sum."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from phalanx.privacy.secagg import (
    PHASES,
    FixedPoint,
    TooFewSurvivors,
    bucket_sums,
    random_buckets,
    secure_sum,
)
from phalanx.privacy.secagg.encoding import unpack_bits
from phalanx.privacy.secagg.messages import EncryptedShares, MaskedInput

N, T, D = 10, 7, 64
RNG = np.random.default_rng(5)
X = RNG.integers(0, 2**32, size=(N, D), dtype=np.uint64)


def plain_sum(x, rows, bits=32):
    return x[list(rows)].astype(np.uint64).sum(0) % np.uint64(2**bits)


def in_sum(phase: str, dropped: set[int]) -> tuple[int, ...]:
    """Who is in U_3: clients that drop at the consistency or unmasking phase sent their input."""
    late = PHASES.index(phase) >= PHASES.index("consistency")
    return tuple(c for c in range(N) if late or c not in dropped)


@pytest.mark.parametrize("adversary", ["active", "honest_but_curious"])
@pytest.mark.parametrize("phase", PHASES)
def test_sum_is_exact_with_n_minus_t_dropouts_at_each_phase(phase, adversary):
    dropped = {1, 4, 8}                                # n - t = 3
    result = secure_sum(X, threshold=T, adversary=adversary, dropouts={phase: dropped}, seed=1)
    assert result.survivors == in_sum(phase, dropped)
    assert np.array_equal(result.sum, plain_sum(X, result.survivors))


@pytest.mark.parametrize("phase", PHASES)
def test_one_dropout_past_n_minus_t_aborts_with_a_clear_error(phase):
    with pytest.raises(TooFewSurvivors,
                       match=r"phase '\w+': only 6 clients remain, the threshold needs at least 7"):
        secure_sum(X, threshold=T, dropouts={phase: {0, 2, 5, 9}}, seed=1)


def test_dropouts_spread_over_phases_add_up():
    dropouts = {"advertise": {0}, "masked_input": {3}, "unmasking": {6}}
    result = secure_sum(X, threshold=T, dropouts=dropouts, seed=2)
    assert result.survivors == (1, 2, 4, 5, 6, 7, 8, 9)
    assert np.array_equal(result.sum, plain_sum(X, result.survivors))
    with pytest.raises(TooFewSurvivors, match="phase 'unmasking'"):
        secure_sum(X, threshold=T, dropouts={**dropouts, "consistency": {7}}, seed=2)


def test_a_third_of_the_clients_may_drop_with_the_default_threshold():
    x = RNG.integers(0, 2**16, size=(15, 8), dtype=np.uint64)
    result = secure_sum(x, bits=16, dropouts={"masked_input": {0, 3, 6, 9, 12}}, seed=3)
    assert len(result.survivors) == 10 and np.array_equal(result.sum, plain_sum(x, result.survivors, 16))
    assert result.config.t == 10


@pytest.mark.parametrize("bits", [8, 26, 64])
def test_other_ring_sizes_are_exact(bits):
    x = RNG.integers(0, 2**min(bits, 63), size=(5, 33), dtype=np.uint64)
    result = secure_sum(x, bits=bits, dropouts={"masked_input": {2}}, seed=4)
    assert np.array_equal(result.sum.astype(np.uint64), (x[[0, 1, 3, 4]].sum(0) % (2**bits)) if bits < 64
                          else x[[0, 1, 3, 4]].sum(0))


def test_real_inputs_through_fixed_point():
    x = torch.randn(12, 50, dtype=torch.float64)
    codec = FixedPoint.for_sum(12, clip=3.0)
    result = secure_sum(x, codec=codec, dropouts={"share_keys": {5}}, seed=5)
    expected = x.clamp(-3, 3)[list(result.survivors)].sum(0).numpy()
    assert np.abs(result.value - expected).max() <= 11 * 2.0 ** -(codec.frac_bits + 1)
    with pytest.raises(ValueError, match="need a codec"):
        secure_sum(x)


def test_a_masked_input_is_uniform_even_when_the_input_is_constant():
    # client 0's input is all zeros; its masked vector's bytes and bits must look uniform.
    # chi-square on the 256 byte values and a two-sided binomial check per bit position,
    # fixed seed, significance 0.001
    x = np.zeros((4, 20_000), dtype=np.uint64)
    seen = {}

    def capture(direction, phase, party, message):
        if isinstance(message, MaskedInput):
            seen[party] = message.vector
        return message

    secure_sum(x, seed=6, intercept=capture)
    y = unpack_bits(seen[0], 32, 20_000)
    assert chisquare(np.bincount(y.view(np.uint8), minlength=256)).pvalue > 0.001
    ones = np.unpackbits(y.view(np.uint8), bitorder="little").reshape(-1, 32).sum(0).astype(np.int64)
    z = (ones - 10_000) / np.sqrt(20_000 * 0.25)
    assert np.abs(z).max() < 3.29 + 0.7   # 3.29 = two-sided 0.001; +0.7 Bonferroni over 32 bits


def test_secagg_plus_gives_the_same_sum_and_masks_only_with_neighbours():
    x = RNG.integers(0, 2**32, size=(30, 40), dtype=np.uint64)
    dropouts = {"masked_input": {3, 17}, "unmasking": {8}}
    full = secure_sum(x, dropouts=dropouts, seed=7)
    sent = {}

    def capture(direction, phase, party, message):
        if isinstance(message, EncryptedShares):
            sent[party] = len(message.ciphertexts)
        return message

    plus = secure_sum(x, degree=8, dropouts=dropouts, seed=7, intercept=capture)
    assert plus.config.protocol == "secagg+" and plus.config.t == 6
    assert np.array_equal(plus.sum, full.sum) and plus.survivors == full.survivors
    assert set(sent.values()) == {8}                   # each client shares with its 8 neighbours only
    assert plus.cost.summary()["client_bytes_up"]["mean"] < full.cost.summary()["client_bytes_up"]["mean"]


def test_cost_record_counts_every_message_type():
    result = secure_sum(X, seed=8)
    s = result.cost.summary()
    assert set(s["bytes_up_by_type"]) == {"AdvertiseKeys", "EncryptedShares", "MaskedInput",
                                         "SurvivorSignature", "UnmaskingShares"}
    assert s["server_bytes_in"] == sum(s["bytes_up_by_type"].values())
    assert s["bytes_up_by_type"]["MaskedInput"] == N * (22 + 4 + 4 + D * 4)   # header, id, length, d words
    assert set(s["client_seconds_by_phase"]) == set(PHASES) and s["server_seconds"] > 0


def test_bucket_sums_reveal_each_bucket_on_its_own():
    buckets = random_buckets(N, 3, b"beacon")
    assert sorted(np.concatenate(buckets).tolist()) == list(range(N)) and len(buckets) == 3
    results = bucket_sums(X, buckets, session_id=b"round-1", seed=9, dropouts={"unmasking": {buckets[0][0]}})
    for rows, result in zip(buckets, results):
        assert result.survivors == tuple(sorted(rows.tolist()))
        assert np.array_equal(result.sum, plain_sum(X, rows))
    assert len({r.config.digest for r in results}) == 3


def test_the_readme_example_runs(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "secure_sum" in b]
    (tmp_path / "example.py").write_text(code)
    namespace = runpy.run_path(str(tmp_path / "example.py"))
    out, rows = namespace["out"], namespace["rows"]
    assert out.survivors == tuple(i for i in range(64) if i not in (5, 9))
    assert np.abs(out.value - np.clip(rows, -3, 3)[list(out.survivors)].sum(0)).max() < 1e-3
