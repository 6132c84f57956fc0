"""Global-batch mining across 2 CPU processes (gloo) equals single-process mining.

One spawn runs every scenario: equal and unequal shares, a random and a deterministic rule.
Each rank trains a DDP-wrapped linear "model" on its share; the loss, the triplets and the
parameter gradients must equal one process on the whole global batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from facenet.losses import triplet_loss
from facenet.losses.distributed import gather_labels, gather_with_grad

WORLD = 2
# (name, rule, rank sizes): unequal sizes exercise the padded all_gather.
SCENARIOS = [
    ("equal-semi-hard", "semi_hard", (12, 12)),
    ("unequal-batch-hard", "batch_hard", (9, 14)),
    ("unequal-random-violating", "random_violating", (13, 8)),
]
MARGIN = 0.5


def global_batch(sizes: tuple[int, ...], seed: int):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    inputs = torch.randn(n, 6, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return inputs, labels


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 5)


def single_process(rule: str, sizes: tuple[int, ...], seed: int):
    inputs, labels = global_batch(sizes, seed)
    model = make_model()
    x = inputs.clone().requires_grad_()
    out = triplet_loss(
        F.normalize(model(x), dim=1), labels, rule, MARGIN, torch.Generator().manual_seed(seed)
    )
    out.loss.backward()
    return {
        "loss": out.loss.detach(),
        "triplets": [t.clone() for t in out.triplets],
        "grads": [p.grad.clone() for p in model.parameters()],
        "input_grad": x.grad.clone(),
        "num_triplets": out.stats.num_triplets,
    }


def worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # why: a file rendezvous, not a TCP port picked by the parent and bound later by a rank
    # (another process could take the port in between; that made this test flaky once)
    init = (Path(out_dir) / "rendezvous").as_uri()
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        results = {}
        for seed, (name, rule, sizes) in enumerate(SCENARIOS):
            inputs, labels = global_batch(sizes, seed)
            start = sum(sizes[:rank])
            local = slice(start, start + sizes[rank])
            model = torch.nn.parallel.DistributedDataParallel(make_model())
            x = inputs[local].clone().requires_grad_()
            out = triplet_loss(
                F.normalize(model(x), dim=1),
                labels[local],
                rule,
                MARGIN,
                torch.Generator().manual_seed(seed),
                distributed=True,
            )
            out.loss.backward()
            results[name] = {
                "loss": out.loss.detach(),
                "triplets": [t.clone() for t in out.triplets],
                "grads": [p.grad.clone() for p in model.parameters()],
                "input_grad": x.grad.clone(),
                "num_triplets": out.stats.num_triplets,
            }
        # Gathers keep rank order and handle unequal lengths; no generator -> shared seed.
        emb = torch.full((rank + 2, 3), float(rank), requires_grad=True)
        gathered = gather_with_grad(emb)
        (gathered * torch.arange(gathered.shape[0], dtype=torch.float32)[:, None]).sum().backward()
        results["gather"] = {
            "values": gathered.detach(),
            "labels": gather_labels(torch.full((rank + 2,), rank)),
            "grad": emb.grad.clone(),
        }
        x = F.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(rank)), dim=1)
        shared = triplet_loss(x, torch.arange(10) % 3, "semi_hard", 1.0, distributed=True)
        results["shared-generator"] = [t.clone() for t in shared.triplets]
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # why: no rank tears gloo down while the other still talks to it (a rank aborted with
        # "terminate called without an active exception" once in CI without this barrier)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(out_dir),), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize(
    ("seed", "scenario"), list(enumerate(SCENARIOS)), ids=[s[0] for s in SCENARIOS]
)
def test_two_process_loss_and_gradients_equal_single_process(ranks, seed, scenario):
    name, rule, sizes = scenario
    ref = single_process(rule, sizes, seed)
    assert ref["num_triplets"] > 0
    for rank, results in enumerate(ranks):
        got = results[name]
        assert got["num_triplets"] == ref["num_triplets"]
        for a, b in zip(got["triplets"], ref["triplets"], strict=True):
            assert torch.equal(a, b)
        torch.testing.assert_close(got["loss"], ref["loss"])
        # DDP averages the ranks' gradients: the result is the single-process gradient.
        for a, b in zip(got["grads"], ref["grads"], strict=True):
            torch.testing.assert_close(a, b)
        # Each rank's inputs get W x their rows of the single-process gradient (adjoint of
        # all_gather), which DDP's averaging of parameter gradients turns into the exact value.
        start = sum(sizes[:rank])
        rows = ref["input_grad"][start : start + sizes[rank]]
        torch.testing.assert_close(got["input_grad"], WORLD * rows)


def test_gather_with_grad_orders_ranks_and_routes_gradients(ranks):
    expected = torch.cat([torch.full((2, 3), 0.0), torch.full((3, 3), 1.0)])
    for rank, results in enumerate(ranks):
        g = results["gather"]
        torch.testing.assert_close(g["values"], expected)
        assert g["labels"].tolist() == [0, 0, 1, 1, 1]
        # d/d(emb) of sum_i i * gathered_i, summed over the 2 ranks' identical losses.
        rows = torch.arange(5, dtype=torch.float32)[2 * rank : 2 * rank + rank + 2]
        torch.testing.assert_close(g["grad"], WORLD * rows[:, None].expand(-1, 3))


def test_default_generator_is_shared_across_ranks(ranks):
    a, b = (r["shared-generator"] for r in ranks)
    assert len(a[0]) > 0
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_without_process_group_gather_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    out = triplet_loss(F.normalize(x, dim=1), [0, 0, 1], "batch_hard", distributed=True)
    ref = triplet_loss(F.normalize(x, dim=1), [0, 0, 1], "batch_hard")
    assert torch.equal(out.loss, ref.loss)
