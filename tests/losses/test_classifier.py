"""The optional CosFace classifier: a slow reference, a published peer, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from facenet.losses.classifier import CosineClassifier


def _reference(emb: torch.Tensor, weight: torch.Tensor, labels, scale, margin) -> float:
    """Row by row, in float64: -log softmax of s * (cos - m [j == y]) at the label."""
    total = 0.0
    for e, y in zip(emb.double(), labels, strict=True):
        e = e / e.norm()
        logits = []
        for j, w in enumerate(weight.double()):
            cos = float(e @ (w / w.norm()))
            logits.append(scale * (cos - (margin if j == int(y) else 0.0)))
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_z - logits[int(y)]
    return total / len(labels)


@pytest.mark.parametrize(("scale", "margin"), [(30.0, 0.2), (10.0, 0.0), (64.0, 0.35)])
def test_loss_matches_a_slow_reference(scale, margin):
    g = torch.Generator().manual_seed(0)
    clf = CosineClassifier(16, 7, scale, margin, generator=g)
    emb = torch.randn(11, 16, generator=g) * 3  # not unit: the classifier normalises
    labels = torch.randint(0, 7, (11,), generator=g)
    loss, acc = clf(emb, labels)
    assert loss.item() == pytest.approx(
        _reference(emb, clf.weight.detach(), labels, scale, margin), rel=1e-5
    )
    cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(clf.weight).T
    assert float(acc) == pytest.approx(float((cos.argmax(1) == labels).float().mean()))


def test_loss_and_gradients_match_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(1)
    ours = CosineClassifier(8, 5, scale=30.0, margin=0.2, generator=g)
    peer = pml.CosFaceLoss(num_classes=5, embedding_size=8, margin=0.2, scale=30.0)
    with torch.no_grad():
        peer.W.copy_(ours.weight.T)  # pml stores the proxies as columns
    emb = torch.randn(9, 8, generator=g)
    labels = torch.randint(0, 5, (9,), generator=g)
    e1, e2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, _ = ours(e1, labels)
    b = peer(e2, labels)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    a.backward()
    b.backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, peer.W.grad.T, rtol=1e-4, atol=1e-6)


def test_margin_makes_the_loss_larger_and_training_separates_classes():
    g = torch.Generator().manual_seed(2)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=g))
    labels = torch.arange(4).repeat_interleave(6)
    emb = centres[labels] + 0.1 * torch.randn(24, 8, generator=g)
    plain = CosineClassifier(8, 4, 30.0, 0.0, generator=torch.Generator().manual_seed(3))
    margin = CosineClassifier(8, 4, 30.0, 0.3, generator=torch.Generator().manual_seed(3))
    assert margin(emb, labels)[0].item() > plain(emb, labels)[0].item()
    opt = torch.optim.SGD(margin.parameters(), lr=0.5)
    first = margin(emb, labels)[0].item()
    for _ in range(50):
        opt.zero_grad()
        margin(emb, labels)[0].backward()
        opt.step()
    loss, acc = margin(emb, labels)
    assert loss.item() < first / 2
    assert float(acc) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "at least 2 identities"),
        ({"scale": 0.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"margin": 1.0}, "margin"),
        ({"margin": -0.1}, "margin"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    args = {"embedding_dim": 4, "num_classes": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        CosineClassifier(**args)


def test_bad_inputs_name_the_problem():
    clf = CosineClassifier(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        clf(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must be"):
        clf(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        clf(torch.randn(2, 4), torch.tensor([0, 3]))
