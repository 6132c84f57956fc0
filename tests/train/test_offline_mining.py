"""Offline mining: refresh cadence, rule guarantees in dataset-index space, batches, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facenet.losses import triplet_margin_loss
from facenet.train.offline import OfflineTripletMiner


def dataset(seed: int = 0, identities: int = 12, per_identity: int = 8, noise: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(identities).repeat_interleave(per_identity)
    centres = torch.randn(identities, 6, generator=g)
    features = centres[labels] + noise * torch.randn(len(labels), 6, generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return features[perm], labels[perm].tolist()


class TableEmbed:
    """A "model" that is a fixed table of embeddings; records how it was called."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = F.normalize(table, dim=1)
        self.calls: list[int] = []
        self.grad_enabled: list[bool] = []

    def __call__(self, indices):
        self.calls.append(len(indices))
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.table[torch.as_tensor(list(indices))]


def test_refresh_cadence_and_chunked_no_grad_embedding():
    features, labels = dataset()
    embed = TableEmbed(features)
    miner = OfflineTripletMiner(
        labels,
        refresh_every=5,
        identities_per_subset=6,
        images_per_identity=4,
        triplets_per_batch=10,
        embed_batch_size=7,
        margin=0.5,
    )
    assert miner.needs_refresh(0)
    with pytest.raises(RuntimeError, match="before refresh"):
        miner.next_batch()
    refreshed = []
    for step in range(12):
        was_due = miner.needs_refresh(step)
        miner.step(step, embed)
        refreshed.append(was_due)
    assert [s for s, r in enumerate(refreshed) if r] == [0, 5, 10]
    assert embed.calls[:4] == [7, 7, 7, 3]  # 24 images in chunks of 7
    assert not any(embed.grad_enabled)
    assert miner.last_stats.step == 10 and miner.last_stats.subset_size == 24


@pytest.mark.parametrize(
    "rule", ["semi_hard", "batch_hard", "random_violating", "hardest_negative"]
)
def test_mined_triplets_satisfy_the_rule_in_dataset_space(rule: str):
    features, labels = dataset(1)
    embed = TableEmbed(features)
    miner = OfflineTripletMiner(
        labels,
        rule=rule,
        margin=0.5,
        identities_per_subset=8,
        images_per_identity=5,
        triplets_per_batch=1000,
        seed=3,
    )
    stats = miner.refresh(embed, step=0)
    assert stats.num_triplets == miner.pool_size > 0
    batch = miner.next_batch()
    assert len(batch.indices) == len(set(batch.indices))
    table = embed.table
    lab = np.asarray(labels)
    for a, p, n in zip(*(t.tolist() for t in batch.triplets), strict=True):
        ia, ip, i_n = batch.indices[a], batch.indices[p], batch.indices[n]
        assert lab[ia] == lab[ip] and ia != ip and lab[i_n] != lab[ia]
        d_ap = float((table[ia] - table[ip]).pow(2).sum())
        d_an = float((table[ia] - table[i_n]).pow(2).sum())
        if rule == "semi_hard":
            assert d_ap - 1e-5 < d_an < d_ap + 0.5 + 1e-5
        elif rule == "random_violating":
            assert d_an < d_ap + 0.5 + 1e-5
    # The batch's loss equals the loss of the same triplets written in dataset indices.
    emb = embed(batch.indices)
    loss = triplet_margin_loss(emb, batch.triplets, 0.5)
    a, p, n = (torch.tensor([batch.indices[i] for i in t.tolist()]) for t in batch.triplets)
    direct = F.relu(
        (table[a] - table[p]).pow(2).sum(1) - (table[a] - table[n]).pow(2).sum(1) + 0.5
    ).mean()
    torch.testing.assert_close(loss, direct)


def test_batches_cycle_through_the_pool_and_are_seeded():
    features, labels = dataset(2)
    runs = []
    for _ in range(2):
        miner = OfflineTripletMiner(
            labels,
            rule="batch_all",
            margin=1.0,
            identities_per_subset=5,
            images_per_identity=4,
            triplets_per_batch=50,
            seed=9,
        )
        miner.refresh(TableEmbed(features), 0)
        runs.append([miner.next_batch() for _ in range(30)])  # wraps around the pool
        pool = miner.pool_size
    assert pool > 50
    for x, y in zip(*runs, strict=True):
        assert x.indices == y.indices
        assert all(torch.equal(s, t) for s, t in zip(x.triplets, y.triplets, strict=True))
    seen = set()
    for b in runs[0][: pool // 50]:
        seen |= {
            tuple(b.indices[i] for i in t)
            for t in zip(*(v.tolist() for v in b.triplets), strict=True)
        }
    assert len(seen) == 50 * (pool // 50)  # no triplet repeats within one pass over the pool


def test_state_dict_resumes_the_same_batches():
    features, labels = dataset(3)
    kwargs = dict(
        margin=1.0, identities_per_subset=6, images_per_identity=4, triplets_per_batch=8, seed=1
    )
    a = OfflineTripletMiner(labels, **kwargs)
    a.refresh(TableEmbed(features), 0)
    a.next_batch()
    b = OfflineTripletMiner(labels, **kwargs)
    b.load_state_dict(a.state_dict())
    assert a.next_batch().indices == b.next_batch().indices
    with pytest.raises(ValueError, match="rule"):
        OfflineTripletMiner(labels, rule="batch_hard", **kwargs).load_state_dict(a.state_dict())


def test_unknown_rule_fails_at_construction():
    with pytest.raises(ValueError, match="semi_hard"):
        OfflineTripletMiner([0, 0, 1, 1], rule="hard")


def test_offline_mining_trains_a_linear_model():
    """A few SGD steps with offline semi-hard mining lower the loss of a fixed triplet set."""
    features, labels = dataset(4, identities=10, per_identity=10, noise=1.2)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def embed(indices):
        return F.normalize(model(features[torch.as_tensor(list(indices))]), dim=1)

    miner = OfflineTripletMiner(
        labels,
        rule="semi_hard",
        margin=0.2,
        refresh_every=5,
        identities_per_subset=10,
        images_per_identity=10,
        triplets_per_batch=200,
        seed=0,
    )
    eval_miner = OfflineTripletMiner(
        labels,
        rule="batch_all",
        margin=0.2,
        identities_per_subset=10,
        images_per_identity=10,
        triplets_per_batch=100_000,
    )
    eval_miner.refresh(embed, 0)
    fixed = eval_miner.next_batch()

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(triplet_margin_loss(embed(fixed.indices), fixed.triplets, 0.2))

    before = fixed_loss()
    for step in range(20):
        batch = miner.step(step, embed)
        loss = triplet_margin_loss(embed(batch.indices), batch.triplets, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


def test_small_identities_give_each_face_once_so_no_face_pairs_with_itself():
    features, labels = dataset(identities=10, per_identity=2)  # 2 faces each, 4 asked for
    miner = OfflineTripletMiner(
        labels, identities_per_subset=8, images_per_identity=4, triplets_per_batch=8, margin=2.0
    )
    stats = miner.refresh(TableEmbed(features), 0)
    assert stats.subset_size == 16 and miner.pool_size > 0
    pool = miner.state_dict()["pool"]
    assert (pool[:, 0] != pool[:, 1]).all()
    assert (np.asarray(labels)[pool[:, 0]] == np.asarray(labels)[pool[:, 1]]).all()
