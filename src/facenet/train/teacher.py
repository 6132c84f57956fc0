"""Distillation targets: a teacher's embeddings of every training face, computed once, cached.

The teacher sees each training face in its own framing (its ``ModelSpec``: input size and the
centre fraction of the standard face crop it was made for), from the same files the student's
faces are decoded from, decoded once into an image cache of its own beside the student's. Each
face is embedded with its mirror image; a face's target is the normalised mean of the two (the
flip-invariant view, as evaluation with flips uses), so it does not matter which way round the
student's augmented copy is.

When the student's embedding is shorter than the teacher's, the targets are projected onto the
top right-singular vectors of the teacher's (uncentred) training embeddings and re-normalised:
the subspace of that dimension that best keeps the teacher's cosine similarities (the best
low-rank approximation of their Gram matrix), with no learnt parameters to checkpoint.

The cache file (``.npz``) holds both embeddings of every face and what made them: the teacher's
reference and weights hash, its framing, and the key of the face list (paths, sizes and mtimes,
as the image caches). A file made by another teacher, framing or face list is refused with an
error naming both, never used; one in progress is continued where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facenet.config import Config
from facenet.data.cache import build_cache, cache_key, square_resize
from facenet.fingerprint import array_sha256, weights_sha256
from facenet.models.inference import combine_flips, embed_faces, inference_network
from facenet.models.loading import load_model
from facenet.preprocess import FRAMING_VERSION
from facenet.train.data import TrainData, build_validation
from facenet.train.validate import PairSet, embed_images
from facenet.utils import atomic_write, open_npz

CACHE_VERSION = 1
_SAVE_EVERY = 2048  # faces between two saves of an unfinished cache


class TeacherCacheError(ValueError):
    """A teacher cache file that another teacher, framing or face list made."""


@dataclass(frozen=True)
class TeacherTargets:
    """What the distillation terms compare the student with.

    Attributes:
        embeddings: (N, 2, D_teacher) float32: each training face's teacher embedding and its
            mirror's, rows aligned with ``TrainData``.
        targets: (N, D_student) float32 unit vectors: the flip mean, projected when needed.
        kept_energy: the fraction of the flip means' squared norm the projection keeps (1.0
            without one).
        meta: what made ``embeddings`` (see ``teacher_meta``).
        path: the cache file.
        transform: (D_teacher, D_student) float64: what maps a unit teacher embedding into the
            targets' frame before the last normalisation (the projection, then any rotation
            ``align_targets`` applied); ``distill.online`` maps each step's teacher embeddings
            with it.
    """

    embeddings: np.ndarray
    targets: Tensor
    kept_energy: float
    meta: dict[str, Any]
    path: Path
    transform: Tensor


def teacher_side(teacher: nn.Module) -> int:
    """Side of the standard face crops cached for ``teacher``: enough pixels for its input
    after it takes the centre ``crop_fraction``."""
    spec = teacher.spec
    return int(round(max(spec.input_size) / min(1.0, float(spec.crop_fraction))))


def faces_key(data: TrainData, side: int) -> str:
    """The key of the training faces as the teacher's cache sees them: the files (paths, sizes,
    mtimes, as ``facenet.data.cache``) or, for synthetic faces, the pixels."""
    if data.paths:
        return cache_key(data.paths, side)
    return "pixels:" + array_sha256(np.ascontiguousarray(data.images))[:20]


def teacher_meta(ref: str, teacher: nn.Module, faces: str) -> dict[str, Any]:
    """What a cache of ``teacher``'s embeddings of ``faces`` must record to be reused."""
    spec = teacher.spec
    return {
        "version": CACHE_VERSION,
        "teacher": ref,
        "weights_hash": weights_sha256(teacher),
        "input_size": [int(s) for s in spec.input_size],
        "crop_fraction": float(spec.crop_fraction),
        "normalization": spec.normalization,
        "embedding_dim": int(spec.embedding_dim),
        "faces": faces,
        "flip": True,
        **({"framing": FRAMING_VERSION} if spec.input_size[0] != spec.input_size[1] else {}),
    }


def default_cache_path(config: Config, meta: dict[str, Any]) -> Path:
    """``<data.cache_dir>/teacher-<key>.npz``, keyed by everything in ``meta``."""
    key = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    return Path(config.data.cache_dir).expanduser() / f"teacher-{key}.npz"


def _describe(meta: dict[str, Any]) -> str:
    return (
        f"teacher {meta.get('teacher')!r} (weights {str(meta.get('weights_hash'))[:12]}), "
        f"input {meta.get('input_size')}, crop_fraction {meta.get('crop_fraction')}, "
        f"faces {meta.get('faces')}"
    )


def _check_cache_path(path: Path) -> None:
    """``ValueError`` when the cache cannot be a file at ``path`` (a folder there, or a file
    where a folder of its path should be)."""
    if path.is_dir():
        raise ValueError(f"{path}: the embedding cache is a folder; name a file (.npz)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{path}: {parent} is a file, not a folder")
            break


def read_cache(path: Path, expected: dict[str, Any]) -> tuple[np.ndarray, int]:
    """(embeddings (N, 2, D), faces done) of the cache at ``path``, made as ``expected`` says.

    Raises:
        TeacherCacheError: the file records another teacher, framing or face list.
        ValueError: the file is not a teacher cache.
    """
    try:
        with open_npz(path) as z:
            meta = json.loads(str(z["meta"]))
            embeddings = np.asarray(z["embeddings"], dtype=np.float32)
            done = int(z["done"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a teacher cache ({e})") from e
    if meta != expected:
        raise TeacherCacheError(
            f"{path} holds the embeddings of {_describe(meta)}; this run's are of "
            f"{_describe(expected)}. Point distill.cache elsewhere (or leave it empty: the "
            "default file is keyed by teacher, framing and faces)"
        )
    return embeddings, done


def _write_cache(path: Path, embeddings: np.ndarray, done: int, meta: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        np.savez(f, embeddings=embeddings, done=np.int64(done), meta=json.dumps(meta))


def teacher_faces(data: TrainData, side: int, config: Config, progress: bool) -> np.ndarray:
    """uint8 (N, side, side, 3) standard face crops of the training faces, for the teacher."""
    if data.paths:
        d = config.data
        cached = build_cache(data.paths, side, d.cache_dir, d.decode_threads, progress)
        return cached.images
    return np.stack([square_resize(np.asarray(im), side) for im in data.images])


def compute_embeddings(
    teacher: nn.Module,
    faces: np.ndarray,
    path: Path,
    meta: dict[str, Any],
    config: Config,
    progress: bool,
) -> np.ndarray:
    """(N, 2, D) embeddings of ``faces`` and their mirrors by ``teacher`` in its own framing,
    saved to ``path`` every few thousand faces (a killed run continues where it stopped)."""
    n, dim = len(faces), int(teacher.spec.embedding_dim)
    embeddings, done = np.zeros((n, 2, dim), np.float32), 0
    if path.is_file():
        embeddings, done = read_cache(path, meta)
    if done >= n:
        return embeddings
    network = inference_network(teacher, config.distill.backend)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=done, desc="teacher", unit="face", file=sys.stderr)
    batch = int(config.distill.batch_size)
    since_save = 0
    while done < n:
        stop = min(n, done + batch)
        e = embed_faces(
            network,
            faces[done:stop],
            batch_size=batch,
            flip=True,
            channels_last=config.distill.backend == "torch",
        )
        embeddings[done:stop] = e.numpy()
        since_save += stop - done
        if bar is not None:
            bar.update(stop - done)
        done = stop
        if since_save >= _SAVE_EVERY or done == n:
            _write_cache(path, embeddings, done, meta)
            since_save = 0
    if bar is not None:
        bar.close()
    return embeddings


def projection(embeddings: np.ndarray, dim: int) -> tuple[Tensor, float]:
    """((D, dim) float64 basis, kept energy) that ``project_targets`` maps a teacher's D-d
    embeddings into ``dim`` dimensions with: the identity when ``dim`` is D, else the top ``dim``
    right-singular vectors of the (uncentred) normalised flip means of ``embeddings`` (N, 2, D).
    """
    mean = combine_flips(torch.from_numpy(embeddings), "mean")
    d = mean.shape[1]
    if dim == d:
        return torch.eye(d, dtype=torch.float64), 1.0
    if dim > d:
        raise ValueError(
            f"the student's embedding ({dim}-d) is longer than the teacher's ({d}-d); "
            "distill into a student of the teacher's dimension or less"
        )
    # float64: the singular vectors of a 10^4 x 512 matrix are stable there
    _, s, vh = torch.linalg.svd(mean.double(), full_matrices=False)
    kept = float((s[:dim] ** 2).sum() / (s**2).sum())
    return vh[:dim].T.contiguous(), kept


def project_targets(embeddings: np.ndarray, dim: int) -> tuple[Tensor, float]:
    """(N, 2, D) teacher embeddings -> ((N, dim) unit targets, kept energy).

    The target is the normalised flip mean; when ``dim`` < D it is projected onto the top
    ``dim`` right-singular vectors of the (uncentred) flip means and normalised again.
    """
    basis, kept = projection(embeddings, dim)
    return projected(embeddings, basis), kept


def projected(embeddings: np.ndarray, basis: Tensor) -> Tensor:
    """(N, 2, D) teacher embeddings -> (N, dim) unit targets: the normalised flip means mapped
    by the (D, dim) ``basis`` and normalised again."""
    mean = combine_flips(torch.from_numpy(embeddings), "mean")
    if basis.shape[0] == basis.shape[1]:  # the identity: no projection
        return mean
    return torch.nn.functional.normalize((mean.double() @ basis).float(), dim=1)


def procrustes_rotation(targets: Tensor, reference: Tensor) -> Tensor:
    """The (D, D) float64 rotation ``R`` minimising ``||targets @ R - reference||`` for (N, D)
    ``targets`` and ``reference`` of the same faces (orthogonal Procrustes)."""
    if targets.shape != reference.shape:
        raise ValueError(f"targets {tuple(targets.shape)} vs reference {tuple(reference.shape)}")
    u, _, vh = torch.linalg.svd(targets.double().T @ reference.double())
    return u @ vh


def align_targets(targets: Tensor, reference: Tensor) -> tuple[Tensor, float, Tensor]:
    """Rotate the (N, D) unit ``targets`` into the frame of the (N, D) unit ``reference``
    embeddings of the same faces (``procrustes_rotation``). A rotation keeps every distance
    between targets, so the teacher's geometry is unchanged; only its orientation follows the
    reference (a harmonic model's v1), which the student can then learn both from.

    Returns:
        (rotated targets, mean cosine between the rotated targets and the reference, the
        (D, D) float64 rotation).
    """
    rotation = procrustes_rotation(targets, reference)
    rotated = (targets.double() @ rotation).float()
    agreement = float((rotated.double() * reference.double()).sum(dim=1).mean())
    return rotated, agreement, rotation


def cached_embeddings(
    ref: str,
    cache: str,
    config: Config,
    data: TrainData,
    progress: bool,
    compute: bool = True,
    model: nn.Module | None = None,
) -> tuple[np.ndarray, dict[str, Any], Path]:
    """(embeddings (N, 2, D), meta, cache file) of model ``ref`` (``model``, when the caller
    already loaded it) for every face of ``data``: computed now (and cached at ``cache``, or at
    the default keyed file when empty), or read.

    ``compute=False`` only reads the cache (ranks other than 0 under torchrun, after rank 0 made
    it).

    Raises:
        TeacherCacheError: ``cache`` names a file another model, framing or face list made.
    """
    model = (model if model is not None else load_model(ref)).eval()
    side = teacher_side(model)
    meta = teacher_meta(ref, model, faces_key(data, side))
    path = Path(cache).expanduser() if cache else default_cache_path(config, meta)
    _check_cache_path(path)  # why: before minutes of embedding, not at the write
    if compute:
        path.parent.mkdir(parents=True, exist_ok=True)
        faces = teacher_faces(data, side, config, progress)
        embeddings = compute_embeddings(model, faces, path, meta, config, progress)
    else:
        embeddings, done = read_cache(path, meta)
        if done < len(embeddings):
            raise ValueError(f"{path}: unfinished teacher cache ({done} of {len(embeddings)})")
    if len(embeddings) != len(data.labels):
        raise ValueError(
            f"{path}: {len(embeddings)} faces, the training set has {len(data.labels)}"
        )
    return embeddings, meta, path


def build_targets(
    config: Config,
    data: TrainData,
    student_dim: int,
    progress: bool,
    compute: bool = True,
    model: nn.Module | None = None,
) -> TeacherTargets:
    """``distill.teacher``'s targets for ``data`` (see ``cached_embeddings``; ``model``: the
    teacher, when the caller already loaded it)."""
    d = config.distill
    embeddings, meta, path = cached_embeddings(
        d.teacher, d.cache, config, data, progress, compute, model=model
    )
    basis, kept = projection(embeddings, student_dim)
    return TeacherTargets(embeddings, projected(embeddings, basis), kept, meta, path, basis)


def pair_embeddings(
    model: nn.Module, config: Config, pairs: PairSet, device: torch.device
) -> Tensor:
    """A frozen model's (M, D) embeddings of the validation pairs' images in its own framing
    (the face itself, no mirror: as a gallery it enrolled stores it), rows as ``pairs.images``;
    harmonic training scores mixed pairs with them (``score_validation(..., right=)``)."""
    size = tuple(model.spec.input_size)
    framed = build_validation(config, size, False, side=teacher_side(model))
    if not (np.array_equal(framed.left, pairs.left) and np.array_equal(framed.right, pairs.right)):
        raise ValueError(f"{model.spec.name}: the validation pairs differ at its framing")
    return embed_images(model.eval(), framed.images, size, device, config.validation.batch_size)
