"""IdentityBalancedSampler: P x K structure, policies, determinism, resume, DDP shares."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from facenet.data.sampler import IdentityBalancedSampler


def make_labels(seed: int = 0) -> list[int]:
    """30 identities with 1..12 images each, shuffled over dataset indices."""
    rng = np.random.default_rng(seed)
    sizes = [1, 1, 2, 3] + list(rng.integers(4, 13, size=26))
    labels = np.repeat(np.arange(100, 130), sizes)
    return [int(x) for x in rng.permutation(labels)]


LABELS = make_labels()
COUNTS = Counter(LABELS)


def test_batches_are_p_identities_by_k_images():
    s = IdentityBalancedSampler(LABELS, identities_per_batch=4, images_per_identity=4, seed=1)
    eligible = [i for i, c in COUNTS.items() if c >= 2]
    assert len(s) == len(eligible) // 4
    seen_identities = []
    for batch in s:
        assert len(batch) == 16 == s.global_batch_size
        labels = [LABELS[i] for i in batch]
        blocks = [labels[j : j + 4] for j in range(0, 16, 4)]
        assert all(len(set(b)) == 1 for b in blocks)  # identity-major blocks
        ids = [b[0] for b in blocks]
        assert len(set(ids)) == 4
        seen_identities += ids
        for j, identity in enumerate(ids):
            block = batch[4 * j : 4 * j + 4]
            if COUNTS[identity] >= 4:
                assert len(set(block)) == 4  # without replacement
            else:  # "replace": every image of a small identity, topped up
                assert set(block) == {i for i, lab in enumerate(LABELS) if lab == identity}
    assert len(seen_identities) == len(set(seen_identities))  # each identity once per epoch
    assert all(COUNTS[i] >= 2 for i in seen_identities)  # singletons are never batch identities


def test_skip_and_all_policies():
    skip = IdentityBalancedSampler(LABELS, 3, 5, small_identity_policy="skip")
    assert len(skip) == sum(1 for c in COUNTS.values() if c >= 5) // 3
    for batch in skip:
        assert all(COUNTS[LABELS[i]] >= 5 for i in batch) and len(batch) == 15
    every = IdentityBalancedSampler(LABELS, 3, 5, small_identity_policy="all", seed=3)
    sizes = set()
    for batch in every:
        for identity, n in Counter(LABELS[i] for i in batch).items():
            assert n == min(5, COUNTS[identity])
        assert len(set(batch)) == len(batch)
        sizes.add(len(batch))
    assert min(sizes) < 15  # some batch held a small identity with all of its images
    with pytest.raises(ValueError, match="small_identity_policy"):
        IdentityBalancedSampler(LABELS, 3, 5, small_identity_policy="pad")


def test_extra_negatives_are_distinct_outside_identities():
    s = IdentityBalancedSampler(LABELS, 4, 3, extra_negatives=6, seed=2)
    for index in range(len(s)):
        batch = s.global_batch(index)
        assert len(batch) == 18
        core = {LABELS[i] for i in batch[:12]}
        extra = [LABELS[i] for i in batch[12:]]
        assert len(set(extra)) == 6 and not core & set(extra)
        assert core == set(s.batch_identities(index))
    with pytest.raises(ValueError, match="extra_negatives"):
        IdentityBalancedSampler(LABELS, 4, 3, extra_negatives=27)


def test_seeded_by_seed_and_epoch_without_global_state():
    a = IdentityBalancedSampler(LABELS, 4, 4, seed=7)
    b = IdentityBalancedSampler(LABELS, 4, 4, seed=7)
    np.random.seed(0)  # noqa: NPY002 - proves global state is not used
    torch.manual_seed(0)
    first = list(a)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    assert list(b) == first
    assert list(a) == first  # a finished epoch iterates again from its start
    a.set_epoch(1)
    assert list(a) != first
    assert list(IdentityBalancedSampler(LABELS, 4, 4, seed=8)) != first


def test_num_batches_makes_longer_epochs_without_repeats_within_a_batch():
    s = IdentityBalancedSampler(LABELS, 5, 2, num_batches=13, seed=4)
    batches = list(s)
    assert len(batches) == len(s) == 13
    for batch in batches:
        assert len({LABELS[i] for i in batch}) == 5


def test_resume_mid_epoch_is_bit_exact():
    full = IdentityBalancedSampler(LABELS, 4, 4, seed=5)
    full.set_epoch(2)
    expected = list(full)
    run = IdentityBalancedSampler(LABELS, 4, 4, seed=5)
    run.set_epoch(2)
    it = iter(run)
    consumed = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert state["epoch"] == 2 and state["position"] == 3
    resumed = IdentityBalancedSampler(LABELS, 4, 4, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop's usual call keeps the position
    assert consumed + list(resumed) == expected
    resumed.set_epoch(3)
    assert resumed.state_dict()["position"] == 0
    with pytest.raises(ValueError, match="seed"):
        IdentityBalancedSampler(LABELS, 4, 4, seed=6).load_state_dict(state)


@pytest.mark.parametrize(("p", "k", "e", "world"), [(4, 4, 0, 2), (6, 3, 4, 3), (5, 4, 3, 2)])
def test_ranks_get_disjoint_shares_of_the_same_global_batch(p, k, e, world):
    ranks = [
        IdentityBalancedSampler(LABELS, p, k, e, seed=9, rank=r, world_size=world)
        for r in range(world)
    ]
    single = IdentityBalancedSampler(LABELS, p, k, e, seed=9)
    assert len({len(s) for s in ranks}) == 1
    for index, shares in enumerate(zip(*ranks, strict=True)):
        flat = [i for share in shares for i in share]
        assert sorted(flat) == sorted(single.global_batch(index))  # same global batch
        assert flat == ranks[0].global_batch(index)  # rank order = gather order
        assert max(map(len, shares)) - min(map(len, shares)) <= 2
        if p % world == 0 and e % world == 0:  # identity-aligned: each share is P/W x K + E/W
            for share in shares:
                counts = Counter(LABELS[i] for i in share[: p // world * k])
                assert len(counts) == p // world and set(counts.values()) == {k}


def test_resume_with_a_different_world_size_continues_the_global_sequence():
    one = IdentityBalancedSampler(LABELS, 4, 4, seed=1)
    it = iter(one)
    next(it), next(it)
    state = one.state_dict()
    two = [IdentityBalancedSampler(LABELS, 4, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in two:
        s.load_state_dict(state)
    rest = [a + b for a, b in zip(*two, strict=True)]
    assert rest == [one.global_batch(i) for i in range(2, len(one))]


def test_works_as_a_dataloader_batch_sampler():
    dataset = torch.arange(len(LABELS))
    s = IdentityBalancedSampler(LABELS, 3, 4, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=s)
    batches = list(loader)
    assert len(batches) == len(s)
    assert all(b.shape == (12,) for b in batches)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identities_per_batch": 40, "images_per_identity": 2}, "identities have enough images"),
        ({"identities_per_batch": 4, "images_per_identity": 1}, "images_per_identity"),
        ({"identities_per_batch": 4, "images_per_identity": 2, "rank": 2, "world_size": 2}, "rank"),
        ({"identities_per_batch": 0, "images_per_identity": 2}, "identities_per_batch"),
    ],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IdentityBalancedSampler(LABELS, **kwargs)
