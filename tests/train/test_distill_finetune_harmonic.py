"""Distillation from a teacher and fine-tuning from given weights, on the tiny synthetic run.

The teacher cache (``facenet.train.teacher``): the projection against an SVD oracle, refusal of a
file another teacher or framing made, continuation of an unfinished file. Training: the terms are
logged, pull the student toward the teacher, and resume bit for bit; ``model.init`` starts from
the given weights and ``model.freeze`` holds the named parameters for ``freeze_steps``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _smoke import SMOKE, distillation_log_ends, smoke_args

from facenet.cli import main
from facenet.config import load_config
from facenet.eval.protocol import verify_embeddings
from facenet.models import create_model
from facenet.models.loading import load_weights_file, save_weights
from facenet.quantize import Int8Codec
from facenet.train import loop
from facenet.train.checkpoint import load_checkpoint
from facenet.train.data import build_train_data
from facenet.train.teacher import (
    TeacherCacheError,
    align_targets,
    build_targets,
    project_targets,
    read_cache,
)
from facenet.train.validate import embed_images, synthetic_pairs


def _teacher(path: Path, seed: int, crop_fraction: float = 1.0, dim: int = 64) -> Path:
    torch.manual_seed(seed)
    model = create_model("tiny", input_size=40, width=8, embedding_dim=dim)
    model.spec = dataclasses.replace(model.spec, crop_fraction=crop_fraction)
    return save_weights(model, path)


def _config(tmp: Path, *extra: str):
    return load_config(SMOKE, [f"output.dir={tmp / 'run'}", f"data.cache_dir={tmp}", *extra])


def _data(config):
    return build_train_data(config, (32, 32), False, frozenset())


# ---------------------------------------------------------------------------- projection
def test_targets_are_the_flip_mean_when_the_dimensions_agree():
    e = np.random.default_rng(0).normal(size=(10, 2, 6)).astype(np.float32)
    targets, kept = project_targets(e, 6)
    expected = torch.nn.functional.normalize(torch.from_numpy(e[:, 0] + e[:, 1]), dim=1)
    torch.testing.assert_close(targets, expected)
    assert kept == 1.0


def test_projection_matches_an_svd_oracle_and_keeps_a_low_rank_geometry():
    rng = np.random.default_rng(1)
    # teacher embeddings that span 3 dimensions of 8: a 3-d projection keeps every cosine
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0][:, :3]
    e = np.stack([rng.normal(size=(20, 3)) @ basis.T] * 2, axis=1).astype(np.float32)
    targets, kept = project_targets(e, 3)
    mean = e.sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    assert targets.shape == (20, 3) and kept == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(targets.numpy() @ targets.numpy().T, mean @ mean.T, atol=1e-5)
    # full rank: the oracle is numpy's SVD (top right-singular vectors, then normalise)
    e = rng.normal(size=(30, 2, 8)).astype(np.float32)
    targets, kept = project_targets(e, 4)
    mean = e.sum(axis=1).astype(np.float64)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    _, s, vh = np.linalg.svd(mean, full_matrices=False)
    oracle = mean @ vh[:4].T
    oracle /= np.linalg.norm(oracle, axis=1, keepdims=True)
    # singular vectors are defined up to sign: compare the Gram matrices
    np.testing.assert_allclose(targets.numpy() @ targets.numpy().T, oracle @ oracle.T, atol=1e-5)
    assert kept == pytest.approx(float((s[:4] ** 2).sum() / (s**2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="longer than the teacher"):
        project_targets(e, 9)


def test_alignment_undoes_a_rotation_and_matches_scipys_procrustes():
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(2)
    reference = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(40, 6))), dim=1)
    q = torch.from_numpy(np.linalg.qr(rng.normal(size=(6, 6)))[0])
    rotated, agreement, _ = align_targets((reference @ q).float(), reference.float())
    torch.testing.assert_close(rotated, reference.float(), atol=1e-5, rtol=0)
    assert agreement == pytest.approx(1.0, abs=1e-6)
    # unrelated targets: scipy's rotation, and every distance between targets kept
    targets = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(40, 6))), dim=1)
    rotated, agreement, _ = align_targets(targets.float(), reference.float())
    r, _ = orthogonal_procrustes(targets.numpy(), reference.numpy())
    np.testing.assert_allclose(rotated.numpy(), targets.numpy() @ r, atol=1e-5)
    np.testing.assert_allclose(
        (rotated @ rotated.T).numpy(), (targets @ targets.T).numpy(), atol=1e-5
    )
    assert agreement == pytest.approx(float((rotated.double() * reference).sum(1).mean()), abs=1e-6)
    with pytest.raises(ValueError, match="reference"):
        align_targets(targets[:5].float(), reference.float())


# ---------------------------------------------------------------------------- the cache
def test_cache_refuses_another_teacher_or_framing(tmp_path):
    a = _teacher(tmp_path / "a.safetensors", seed=1)
    b = _teacher(tmp_path / "b.safetensors", seed=2)
    wide = _teacher(tmp_path / "wide.safetensors", seed=1, crop_fraction=0.8)
    cache = tmp_path / "teacher.npz"
    config = _config(tmp_path, f"distill.teacher={a}", f"distill.cache={cache}")
    data = _data(config)
    made = build_targets(config, data, 64, progress=False)
    assert made.path == cache and made.embeddings.shape == (len(data.labels), 2, 64)
    assert made.meta["teacher"] == str(a) and made.meta["crop_fraction"] == 1.0
    again = build_targets(config, data, 32, progress=False)  # reused: the same embeddings
    np.testing.assert_array_equal(again.embeddings, made.embeddings)
    assert again.targets.shape == (len(data.labels), 32) and 0 < again.kept_energy < 1
    for other, what in ((b, "weights"), (wide, "crop_fraction 0.8")):
        config = _config(tmp_path, f"distill.teacher={other}", f"distill.cache={cache}")
        with pytest.raises(TeacherCacheError, match=what) as e:
            build_targets(config, data, 64, progress=False)
        assert str(cache) in str(e.value) and str(a) in str(e.value)
    # without distill.cache every teacher and framing gets a file of its own, beside the faces
    paths = {
        build_targets(_config(tmp_path, f"distill.teacher={t}"), data, 64, False).path
        for t in (a, b, wide)
    }
    assert len(paths) == 3 and all(p.parent == tmp_path for p in paths)


def test_an_unfinished_cache_is_continued_not_recomputed(tmp_path):
    a = _teacher(tmp_path / "a.safetensors", seed=1)
    cache = tmp_path / "teacher.npz"
    config = _config(tmp_path, f"distill.teacher={a}", f"distill.cache={cache}")
    data = _data(config)
    full = build_targets(config, data, 64, progress=False).embeddings
    # as a kill would leave it: the first 50 faces saved (here marked), the rest not yet
    meta = build_targets(config, data, 64, False).meta
    embeddings, _ = read_cache(cache, meta)
    embeddings[:50] = 7.0
    embeddings[50:] = 0.0
    with open(cache, "wb") as f:
        np.savez(f, embeddings=embeddings, done=np.int64(50), meta=json.dumps(meta))
    continued = build_targets(config, data, 64, progress=False).embeddings
    assert (continued[:50] == 7.0).all()  # kept, not embedded again
    np.testing.assert_allclose(continued[50:], full[50:], atol=1e-6)
    # a file that is not a cache (or an empty one) is named, not overwritten
    for junk in (b"not a cache", b""):
        cache.write_bytes(junk)
        with pytest.raises(ValueError, match="not a teacher cache"):
            build_targets(config, data, 64, progress=False)
        assert cache.read_bytes() == junk


# ---------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    return _teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors", seed=3, dim=256)


DISTILL = ("distill.embedding_weight=2.0", "distill.relation_weight=1.0")


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, teacher_file):
    run = tmp_path_factory.mktemp("distill") / "run"
    assert main(smoke_args(run, f"distill.teacher={teacher_file}", *DISTILL)) == 0
    return run


def test_distillation_is_logged_and_pulls_the_student_to_the_teacher(distill_run, teacher_file):
    first, last = distillation_log_ends(distill_run)
    assert float(last["loss_distill"]) < float(first["loss_distill"])
    # the trained student sits closer to the teacher's targets than its initialisation
    config = load_config(
        distill_run / "config.yaml", [f"output.dir={distill_run.parent / 'probe'}"]
    )
    data = _data(config)
    targets = build_targets(config, data, 128, progress=False).targets

    def distance(model) -> float:
        e = embed_images(model, data.images, (32, 32), torch.device("cpu"))
        return float(((e - targets) ** 2).sum(dim=1).mean())

    torch.manual_seed(config.seed)
    start = create_model("tiny", input_size=32, width=8)
    trained = load_weights_file(distill_run / "last.safetensors")
    assert distance(trained) < 0.8 * distance(start)
    # the exported weights carry their 128-byte code: int8 scales from the training faces'
    # embeddings (all 144 here, fewer than the 2,000 calibration faces), maximum -> 127
    e = embed_images(trained, data.images, (32, 32), torch.device("cpu")).numpy()
    codec = Int8Codec.from_dict(trained.card.int8)
    np.testing.assert_allclose(codec.scale, np.abs(e).max(axis=0) / 127, rtol=1e-5)


def test_too_few_identities_for_the_batch_is_said_before_the_teacher_embeds_a_face(
    teacher_file, tmp_path, capsys
):
    # 24 synthetic identities, batches of 30: refused at once, before the teacher's cache
    run = tmp_path / "run"
    args = smoke_args(run, f"distill.teacher={teacher_file}", "sampler.identities_per_batch=30")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "only 24 identities have enough images" in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("teacher-*.npz"))


def test_distillation_resumes_bit_exactly(distill_run, teacher_file, tmp_path, interrupt_training):
    run = tmp_path / "run"
    args = smoke_args(run, f"distill.teacher={teacher_file}", *DISTILL)
    interrupt_training(12, main, args)
    assert main([*args, "--resume"]) == 0
    final, ref = load_checkpoint(run / "last.pt"), load_checkpoint(distill_run / "last.pt")
    assert final["step"] == ref["step"] == 24
    assert all(torch.equal(final["model_state"][k], v) for k, v in ref["model_state"].items())


# ---------------------------------------------------------------------------- harmonic
@pytest.fixture(scope="module")
def old_model(tmp_path_factory):
    """v1: a tiny model of the student's architecture and dimension (any frozen weights do)."""
    torch.manual_seed(5)
    model = create_model("tiny", input_size=32, width=8)
    return save_weights(model, tmp_path_factory.mktemp("v1") / "v1.safetensors")


def test_harmonic_run_is_declared_compatible_and_resumes_bit_exactly(
    old_model, tmp_path, interrupt_training
):
    from facenet.apps.embedder import Embedder

    extra = (f"harmonic.model={old_model}", "harmonic.weight=1.0")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(smoke_args(straight, *extra)) == 0
    with open(straight / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["loss_harmonic"]) >= 0 for r in rows)
    assert any(float(r["loss_harmonic"]) > 0 for r in rows)
    interrupt_training(12, main, smoke_args(broken, *extra))
    assert main([*smoke_args(broken, *extra), "--resume"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(broken / "last.pt")
    assert all(torch.equal(a["model_state"][k], v) for k, v in b["model_state"].items())
    # the weights say which old model's galleries they may query; another model's are refused
    v1 = Embedder.from_ref(str(old_model)).fingerprint
    v2 = Embedder.from_ref(str(straight / "last.safetensors")).fingerprint
    plain = Embedder.from_ref(str(init_file_path(tmp_path))).fingerprint
    assert load_weights_file(straight / "last.safetensors").card.compatible_with == (
        v1.weights_hash,
    )
    assert v2.can_query(v1) and not v1.can_query(v2) and not plain.can_query(v1)
    # v2's probes against v1's galleries: thresholds of mixed validation pairs (v1 embeds the
    # left face, as its gallery stored it, v2 the right one); the oracle recomputes them
    card = load_weights_file(straight / "last.safetensors").card
    config = load_config(SMOKE, [f"output.dir={straight}"])
    cpu = torch.device("cpu")
    v1_pairs = synthetic_pairs(32, config.seed)  # v1 frames the whole 32 px face
    pairs = synthetic_pairs(37, config.seed)  # v2 trained on 32 px windows of 37 px faces
    e1 = embed_images(load_weights_file(old_model), v1_pairs.images, (32, 32), cpu)
    e2 = embed_images(load_weights_file(straight / "last.safetensors"), pairs.images, (32, 32), cpu)
    _, report = verify_embeddings(
        e1.numpy()[pairs.left], e2.numpy()[pairs.right], pairs.issame, pairs.folds
    )
    assert card.mixed_thresholds.keys() == {v1.weights_hash}
    mixed = card.mixed_thresholds[v1.weights_hash]
    assert mixed.keys() == card.thresholds.keys()
    assert mixed == pytest.approx(dict(report.thresholds), abs=1e-5)


def test_with_a_harmonic_model_the_teachers_targets_are_rotated_into_its_frame(old_model, tmp_path):
    from facenet.train.distributed import DistInfo
    from facenet.train.state import build_state
    from facenet.train.terms import DistillTerm

    teacher = _teacher(tmp_path / "t.safetensors", seed=3, dim=128)
    config = _config(tmp_path, f"distill.teacher={teacher}", f"harmonic.model={old_model}")
    state = build_state(config, DistInfo(0, 1, 0, torch.device("cpu")), resume=False)
    targets = next(t for t in state.terms if isinstance(t, DistillTerm)).targets
    old = state.old.embeddings
    plain = state.teacher.targets  # as distillation alone would learn them...
    unrotated = build_targets(config, state.data, 128, False).targets
    torch.testing.assert_close(targets, plain)
    # ...but a rotation of them: the same distances, closer to v1's embeddings of the faces
    np.testing.assert_allclose(
        (targets @ targets.T).numpy(), (unrotated @ unrotated.T).numpy(), atol=1e-5
    )
    closer = (targets * old).sum(1).mean()
    assert closer > (unrotated * old).sum(1).mean() + 0.05


def init_file_path(tmp: Path) -> Path:
    torch.manual_seed(12)
    return save_weights(create_model("tiny", input_size=32, width=8), tmp / "plain.safetensors")


def test_harmonic_model_of_another_dimension_is_refused(tmp_path, capsys):
    torch.manual_seed(5)
    wide = save_weights(
        create_model("tiny", input_size=32, width=8, embedding_dim=64), tmp_path / "v1.safetensors"
    )
    code = main(smoke_args(tmp_path / "run", f"harmonic.model={wide}"))
    err = capsys.readouterr().err
    assert code == 2 and "64 dimensions" in err and "Traceback" not in err


def test_distilling_without_a_teacher_model_is_one_line(tmp_path, capsys):
    code = main(smoke_args(tmp_path / "run", f"distill.teacher={tmp_path / 'missing.safetensors'}"))
    err = capsys.readouterr().err
    assert code != 0 and "missing.safetensors" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def init_file(tmp_path_factory):
    torch.manual_seed(11)
    model = create_model("tiny", input_size=32, width=8)
    return save_weights(model, tmp_path_factory.mktemp("init") / "init.safetensors")


FREEZE = ("model.freeze=[features]", "model.freeze_steps=8")


def test_fine_tuning_starts_from_the_weights_and_holds_frozen_ones(tmp_path, init_file):
    init = load_weights_file(init_file).state_dict()
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def watch(state) -> None:
        if state.step in (0, 8, 9):
            seen[state.step] = {k: v.clone() for k, v in state.model.state_dict().items()}

    config = load_config(
        SMOKE,
        [
            f"output.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path}",
            f"model.init={init_file}",
            *FREEZE,
        ],
    )
    loop.train(config, hooks=[watch])
    params = [k for k in init if not k.endswith(("running_mean", "running_var", "tracked"))]
    assert all(torch.equal(seen[0][k], init[k]) for k in init)
    frozen = [k for k in params if k.startswith("features.")]
    head = [k for k in params if k.startswith("head.")]
    assert frozen and head
    # steps 0..7 leave the frozen parameters as loaded; the head moved; step 8 moves them too
    assert all(torch.equal(seen[8][k], init[k]) for k in frozen)
    assert not all(torch.equal(seen[8][k], init[k]) for k in head)
    assert not all(torch.equal(seen[9][k], init[k]) for k in frozen)


def test_fine_tuning_resumes_bit_exactly_across_the_unfreeze(
    tmp_path, init_file, interrupt_training
):
    extra = (f"model.init={init_file}", *FREEZE)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(smoke_args(straight, *extra)) == 0
    interrupt_training(4, main, smoke_args(broken, *extra))  # killed while still frozen
    assert main([*smoke_args(broken, *extra), "--resume"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(broken / "last.pt")
    assert all(torch.equal(a["model_state"][k], v) for k, v in b["model_state"].items())


def test_fine_tuning_refuses_weights_of_another_shape_or_a_bad_freeze(tmp_path, capsys, init_file):
    code = main(smoke_args(tmp_path / "a", f"model.init={init_file}", "model.kwargs.width=16"))
    err = capsys.readouterr().err
    assert code == 2 and "init.safetensors" in err and "do not fit" in err
    code = main(smoke_args(tmp_path / "b", "model.freeze=[featurez]"))
    err = capsys.readouterr().err
    assert code == 2 and "featurez" in err and "features" in err


def test_fine_tuning_a_converted_model_gives_its_batch_norms_their_statistics_back(tmp_path):
    """A frozen graph's batch norms load as identities (``facenet.models.unfold``): before the
    first step they are re-estimated on training faces, the network's eval output unchanged."""
    from facenet.models.unfold import is_identity_batchnorm

    torch.manual_seed(11)
    model = create_model("tiny", input_size=32, width=8).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # as a converter loads a folded graph
            m.running_var.fill_(1 - m.eps)
            m.bias.data.uniform_(-0.3, 0.3)
    assert any(is_identity_batchnorm(m) for m in model.modules())
    init = save_weights(model, tmp_path / "converted.safetensors")
    seen = {}

    def watch(state) -> None:
        if state.step == 0:
            seen["model"] = copy.deepcopy(state.model).eval()

    config = _config(tmp_path, f"model.init={init}", "max_steps=1", "validation.every=0")
    loop.train(config, hooks=[watch])
    started = seen["model"]
    assert not any(is_identity_batchnorm(m) for m in started.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(started(x), load_weights_file(init)(x), rtol=1e-4, atol=1e-5)
