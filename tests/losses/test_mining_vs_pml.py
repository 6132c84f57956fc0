"""Our semi-hard rule against pytorch-metric-learning's ``TripletMarginMiner("semihard")``.

pml returns *every* semi-hard triplet, 0 < d(a, n) - d(a, p) <= margin; the paper's rule keeps one
per anchor-positive pair. So: each triplet we choose must be in pml's set, and the pairs we cover
must be exactly the pairs pml has triplets for. Both sides read pml's own squared-L2 distance
matrix, and float64 embeddings keep the two ways of writing the margin test (``an - ap <= m`` vs
``an < ap + m``) from disagreeing by rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning.distances import LpDistance  # noqa: E402
from pytorch_metric_learning.miners import TripletMarginMiner  # noqa: E402

from facenet.losses import mine_triplets  # noqa: E402


def clustered(seed: int, identities: int, per_identity: int, noise: float):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(identities).repeat_interleave(per_identity)
    centres = torch.randn(identities, 8, generator=g, dtype=torch.float64)
    x = centres[labels] + noise * torch.randn(len(labels), 8, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(labels), generator=g)
    return x[perm], labels[perm]


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize(("seed", "noise"), [(0, 0.6), (1, 1.0), (2, 2.0)])
def test_semi_hard_agrees_with_pytorch_metric_learning(margin: float, seed: int, noise: float):
    x, labels = clustered(seed, identities=6, per_identity=7, noise=noise)
    distance = LpDistance(normalize_embeddings=True, p=2, power=2)
    a_ref, p_ref, n_ref = TripletMarginMiner(margin, "semihard", distance=distance)(x, labels)
    reference = set(zip(a_ref.tolist(), p_ref.tolist(), n_ref.tolist(), strict=True))
    assert reference, "test batch should have semi-hard triplets"
    sq = distance(x)  # pml's (B, B) squared L2 of the normalised embeddings
    assert torch.allclose(sq, torch.cdist(F.normalize(x, dim=1), F.normalize(x, dim=1)) ** 2)

    for rule in ("semi_hard", "semi_hard_hardest"):
        out = mine_triplets(sq, labels, rule, margin, torch.Generator().manual_seed(seed))
        ours = list(zip(*(t.tolist() for t in out), strict=True))
        assert set(ours) <= reference
        assert {(a, p) for a, p, _ in ours} == {(a, p) for a, p, _ in reference}
        assert len(ours) == len({(a, p) for a, p, _ in ours})  # one negative per pair
    # The closest semi-hard negative is pml's closest candidate of that pair.
    candidates: dict[tuple[int, int], list[int]] = {}
    for a, p, n in reference:
        candidates.setdefault((a, p), []).append(n)
    for a, p, n in ours:
        assert float(sq[a, n]) == min(float(sq[a, m]) for m in candidates[(a, p)])

    # Over many draws the random rule reaches every pml candidate of a pair.
    g = torch.Generator().manual_seed(seed)
    seen = set()
    for _ in range(200):
        out = mine_triplets(sq, labels, "semi_hard", margin, g)
        seen |= set(zip(*(t.tolist() for t in out), strict=True))
    assert seen <= reference
    if margin <= 0.2:
        assert seen == reference
