"""Consistent teaching (``distill.online``, ``facenet.train.online_teacher``): each step's targets
are the teacher's embeddings of the faces exactly as augmented for the student.

Oracles: the teacher's own eval-mode forward on the batch's pixels, resized by OpenCV and mapped
by numpy's SVD projection; the cached clean targets, which the online mapping must reproduce from
the cached teacher embeddings (so both live in one frame, harmonic rotation included).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from _smoke import SMOKE, distillation_log_ends, smoke_args
from PIL import Image
from torch import nn

from facenet.cli import main
from facenet.config import ConfigError, load_config
from facenet.models import create_model
from facenet.models.loading import load_weights_file, save_weights
from facenet.preprocess import ModelSpec, normalize
from facenet.train.checkpoint import load_checkpoint
from facenet.train.data import augment_stream, augmented_pixels
from facenet.train.distributed import DistInfo
from facenet.train.online_teacher import OnlineTeacher
from facenet.train.state import build_state
from facenet.train.step import next_batch

CPU = torch.device("cpu")


def _save(path, seed: int, dim: int, input_size=40):
    torch.manual_seed(seed)
    return save_weights(
        create_model("tiny", input_size=input_size, width=8, embedding_dim=dim), path
    )


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A 256-d teacher at 40 px: the student's 32 px crops are resized up to it."""
    return _save(tmp_path_factory.mktemp("teacher") / "teacher.safetensors", seed=3, dim=256)


def _state(tmp_path, *extra: str):
    config = load_config(
        SMOKE, [f"output.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path}", *extra]
    )
    return build_state(config, DistInfo(0, 1, 0, CPU), resume=False)


def _resize(images: np.ndarray, h: int, w: int) -> np.ndarray:
    """float (n, H, W, 3) -> (n, h, w, 3): OpenCV's bilinear up, Pillow's antialiased bilinear
    down (each channel a float image), the independent resizers."""
    if h >= images.shape[1]:
        return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images])
    return np.stack(
        [
            np.stack(
                [np.asarray(Image.fromarray(im[:, :, c]).resize((w, h), Image.BILINEAR))
                 for c in range(3)],
                axis=2,
            )
            for im in images
        ]
    )  # fmt: skip


def _oracle_targets(teacher_file, pixels: torch.Tensor, basis: np.ndarray) -> np.ndarray:
    """The teacher's plain eval forward of ``pixels`` resized to its input (``_resize``),
    projected onto ``basis`` and normalised, in float64 where numpy does the work."""
    teacher = load_weights_file(teacher_file).eval()
    spec = teacher.spec
    h, w = spec.input_size
    resized = _resize(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()), h, w)
    x = (resized - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    with torch.no_grad():
        e = teacher(torch.from_numpy(x).permute(0, 3, 1, 2).float()).double().numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    t = e @ basis
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def _assert_oracle(state, teacher_file, pixels: torch.Tensor, targets: torch.Tensor, atol: float):
    """``targets`` are the oracle's for ``pixels``, up to the signs of the projection's
    singular vectors (matched against the run's own basis; the Gram matrix needs no matching)."""
    dim = targets.shape[1]
    basis = _svd_basis(state.teacher.embeddings, dim)
    expected = _oracle_targets(teacher_file, pixels, basis)
    got = targets.double().numpy()
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=atol)
    signs = np.sign((state.teacher.transform.numpy() * basis).sum(axis=0))
    np.testing.assert_allclose(got, expected * signs, atol=atol)


def _svd_basis(embeddings: np.ndarray, dim: int) -> np.ndarray:
    mean = embeddings.astype(np.float64).sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    if dim == mean.shape[1]:
        return np.eye(dim)
    return np.linalg.svd(mean, full_matrices=False)[2][:dim].T


def test_targets_are_the_teachers_embeddings_of_the_augmented_batch(teacher_file, tmp_path):
    state = _state(
        tmp_path,
        f"distill.teacher={teacher_file}",
        "distill.online=true",
        "data.augment.rotate=10",
        "data.augment.brightness=0.3",
    )
    batch = next_batch(state)
    pixels = augmented_pixels(
        state.data.images[batch.indices], (32, 32), state.config, 0, augment_stream(0)
    )
    # the cached faces are 37 px (32 px crops): the teacher sees them resized up to 40 px
    _assert_oracle(state, teacher_file, pixels, batch.targets, atol=1e-4)
    assert batch.targets.shape == (len(batch.indices), 128)


def test_the_online_map_reproduces_the_cached_targets_harmonic_rotation_included(
    teacher_file, tmp_path
):
    old = _save(tmp_path / "v1.safetensors", seed=5, dim=128, input_size=32)
    state = _state(
        tmp_path,
        f"distill.teacher={teacher_file}",
        "distill.online=true",
        f"harmonic.model={old}",
    )
    t = state.teacher
    mean = torch.nn.functional.normalize(torch.from_numpy(t.embeddings).sum(dim=1), dim=1)
    mapped = torch.nn.functional.normalize((mean.double() @ t.transform).float(), dim=1)
    torch.testing.assert_close(mapped, t.targets, atol=1e-5, rtol=0)
    # the rotation is there: v1's frame, not the projection's
    unrotated = torch.nn.functional.normalize(
        (mean.double() @ torch.from_numpy(_svd_basis(t.embeddings, 128))).float(), dim=1
    )
    assert (t.targets * state.old.embeddings).sum(1).mean() > (
        (unrotated * state.old.embeddings).sum(1).mean() + 0.05
    )
    online = state.online_teacher
    assert online is not None
    torch.testing.assert_close(online.transform, t.transform.float())


def test_without_online_batches_carry_no_targets(teacher_file, tmp_path):
    state = _state(tmp_path, f"distill.teacher={teacher_file}")
    assert state.online_teacher is None
    assert next_batch(state).targets is None


@pytest.fixture(scope="module")
def online_run(tmp_path_factory, teacher_file):
    run = tmp_path_factory.mktemp("online") / "run"
    assert main(smoke_args(run, f"distill.teacher={teacher_file}", "distill.online=true")) == 0
    return run


def test_online_distillation_trains_and_pulls_toward_the_teacher(online_run):
    first, last = distillation_log_ends(online_run)
    assert float(last["loss_distill"]) < 0.8 * float(first["loss_distill"])


def test_online_distillation_resumes_bit_exactly(
    online_run, teacher_file, tmp_path, interrupt_training
):
    run = tmp_path / "run"
    args = smoke_args(run, f"distill.teacher={teacher_file}", "distill.online=true")
    interrupt_training(12, main, args)
    assert main([*args, "--resume"]) == 0
    final, ref = load_checkpoint(run / "last.pt"), load_checkpoint(online_run / "last.pt")
    assert final["step"] == ref["step"] == 24
    assert all(torch.equal(final["model_state"][k], v) for k, v in ref["model_state"].items())


def test_resume_refuses_what_would_change_the_online_targets(tmp_path, capsys, teacher_file):
    run = tmp_path / "run"
    args = smoke_args(run, f"distill.teacher={teacher_file}", "distill.online=true")
    assert main([*args, "max_steps=8"]) == 0
    # switching it off; with it on, the teacher's backend or chunking (each step's targets)
    for changed in (["distill.online=false"], ["distill.backend=onnxruntime"],
                    ["distill.batch_size=7"]):  # fmt: skip
        code = main([*args, *changed, "--resume"])
        err = capsys.readouterr().err
        assert code == 2, changed
        assert changed[0].split("=")[0] in err and "Traceback" not in err
    # a checkpoint from before the setting existed ran without it: turning it on is a change
    ckpt = load_checkpoint(run / "last.pt")
    del ckpt["config"]["distill"]["online"]
    ckpt["config"]["distill"]["backend"] = "onnxruntime"
    torch.save(ckpt, run / "last.pt")
    assert main([*args, "distill.backend=onnxruntime", "--resume"]) == 2
    assert "distill.online: False -> True" in capsys.readouterr().err


def test_without_online_teaching_the_teachers_backend_may_change_at_resume(tmp_path, teacher_file):
    run = tmp_path / "run"
    args = smoke_args(run, f"distill.teacher={teacher_file}")
    assert main([*args, "max_steps=8"]) == 0
    assert main([*args, "max_steps=12", "distill.backend=onnxruntime", "--resume"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "distill.online=true needs a distill.teacher"),
        (
            ["distill.teacher=T", "distill.embedding_weight=0", "distill.relation_weight=0"],
            "for no loss term",
        ),
    ],
)
def test_online_teaching_that_would_do_nothing_is_refused(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, ["distill.online=true", *extra])


def test_a_non_square_student_sees_the_centre_window_of_the_teachers_square(teacher_file, tmp_path):
    state = _state(tmp_path, f"distill.teacher={teacher_file}", "distill.online=true")
    # a 32 x 24 student (the tiny network pools globally, so any input shape runs)
    state.model.spec = dataclasses.replace(state.model.spec, input_size=(32, 24))
    batch = next_batch(state)
    square = augmented_pixels(
        state.data.images[batch.indices], (32, 32), state.config, 0, augment_stream(0)
    )
    assert batch.images.shape[1:] == (3, 32, 24)
    window = normalize(square[:, :, :, 4:28], state.model.spec)
    torch.testing.assert_close(batch.images, window, atol=0, rtol=0)
    _assert_oracle(state, teacher_file, square, batch.targets, atol=1e-4)


def test_a_smaller_teacher_input_is_reached_by_an_antialiased_shrink():
    # a "teacher" that returns its input pixels, so the targets are the resized faces themselves
    side, small = 32, 20
    spec = ModelSpec("pixels", (small, small), 3 * small * small, mean=(0.0,) * 3, std=(1.0,) * 3)
    teacher = OnlineTeacher(nn.Flatten(), spec, torch.eye(3 * small * small), 3, CPU)
    pixels = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (5, 3, side, side)))
    pixels = pixels.float()
    got = teacher(pixels).numpy()
    resized = _resize(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()), small, small)
    flat = resized.transpose(0, 3, 1, 2).reshape(5, -1)
    expected = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # the test can tell: a plain bilinear shrink of this noise is far from Pillow's
    aliased = nn.functional.interpolate(pixels, size=(small, small), mode="bilinear").flatten(1)
    aliased = nn.functional.normalize(aliased, dim=1).numpy()
    assert np.abs(aliased - expected).max() > 50 * 2e-5


def test_a_factory_given_a_list_for_a_side_is_a_setting_error(tmp_path, capsys):
    # tiny takes one side; a list used to reach the framing arithmetic as an internal error
    assert main(smoke_args(tmp_path / "run", "model.kwargs.input_size=[36,32]")) == 2
    err = capsys.readouterr().err
    assert "model.kwargs=" in err and "input_size" in err and "Traceback" not in err
    assert "internal error" not in err


def test_the_teacher_backends_agree(teacher_file, tmp_path):
    pytest.importorskip("onnxruntime")
    a = _state(tmp_path / "a", f"distill.teacher={teacher_file}", "distill.online=true")
    b = _state(
        tmp_path / "b",
        f"distill.teacher={teacher_file}",
        "distill.online=true",
        "distill.backend=onnxruntime",
    )
    pixels = augmented_pixels(a.data.images[:20], (32, 32), a.config, 0, 0)
    torch.testing.assert_close(
        a.online_teacher(pixels), b.online_teacher(pixels), atol=1e-4, rtol=0
    )
