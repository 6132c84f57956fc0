"""What a training run reads: the training faces, the validation pairs, and each step's batch.

Every random draw is a function of (seed, step, stream) (``facenet.data.augment.step_rng``) or
of a position that checkpoints save (``BatchStream``), so a resumed run reads the batches an
uninterrupted one reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facenet.config import Config
from facenet.data.augment import augment_batch, step_rng
from facenet.data.cache import build_cache
from facenet.data.folder import read_people_list, scan_roots, split_excluded_people
from facenet.data.sampler import IdentityBalancedSampler
from facenet.data.synthetic import make_synthetic
from facenet.losses.mining import Triplets
from facenet.preprocess import ModelSpec, normalize
from facenet.train.offline import OfflineMiningStats
from facenet.train.validate import PairSet, default_pairs_path, load_lfw_pairs, synthetic_pairs
from facenet.utils import default_data_dir

# step_rng streams, each drawn afresh from (seed, step, stream). Rank 0 augments from stream 0, so
# a single process draws what it always drew; the other ranks' augmentation sits apart from it
# and from the mining seed.
MINING_STREAM = 1
_RANK_AUGMENT_STREAM = 1 << 16  # + rank, ranks >= 1


def augment_stream(rank: int) -> int:
    """The step_rng stream of ``rank``'s training augmentation."""
    return 0 if rank == 0 else _RANK_AUGMENT_STREAM + rank


def mining_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s mining draws (the same on every rank)."""
    return int(step_rng(seed, step, MINING_STREAM).integers(2**62))


@dataclass(frozen=True)
class TrainData:
    """Training images and labels (images may be a memmap)."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)
    identities: tuple[str, ...]
    paths: tuple[str, ...] = ()  # the file of each image; () for synthetic faces


@dataclass(frozen=True)
class Batch:
    """One step's faces on this rank, and what the loss terms need beside their embeddings.

    Attributes:
        indices: (n,) dataset indices of this rank's faces.
        images: (n, 3, H, W) augmented and normalised, on the training device.
        labels: (n,) identity labels of ``indices``, on the training device.
        triplets: offline-mined triplets (positions in the batch), or None: mine online.
        mined: the offline mining ``triplets`` come from (None for online batches).
        mining_seed: seed of the online mining rule's random draws this step.
        global_size: faces in the step's global batch (all ranks), for images/s.
        targets: (n, D) distillation targets of this rank's faces as augmented
            (``distill.online``), or None: the cached ones.
    """

    indices: np.ndarray
    images: Tensor
    labels: Tensor
    triplets: Triplets | None
    mined: OfflineMiningStats | None
    mining_seed: int
    global_size: int
    targets: Tensor | None = None


# ----------------------------------------------------------------------------------- build
def stored_size(config: Config, input_size: tuple[int, int]) -> int:
    """Side of cached images: configured, or the input size plus 1/7 of room for random crops."""
    if config.data.stored_size > 0:
        return config.data.stored_size
    return int(round(max(input_size) * 8 / 7))


def lfw_dir(config: Config) -> Path | None:
    """The folder with LFW's protocol files: configured, or ``<shared data>/lfw``."""
    if config.data.lfw_dir:
        return Path(config.data.lfw_dir).expanduser()
    root = default_data_dir()
    return root / "lfw" if root is not None else None


def build_train_data(
    config: Config, input_size: tuple[int, int], progress: bool, forbidden: frozenset[str]
) -> TrainData:
    """The training set from synthetic faces or folder roots (cached, person-disjoint split).

    ``forbidden`` names people that must not be trained on (the validation pairs' people); a
    split that would include any of them is an error, not a silent leak.
    """
    size = stored_size(config, input_size)
    d = config.data
    if d.synthetic_identities > 0:
        faces = make_synthetic(
            d.synthetic_identities, d.synthetic_images_per_identity, size, config.seed
        )
        return TrainData(faces.images, faces.labels, faces.identities)
    if not d.roots:
        raise ValueError("data.roots is empty and data.synthetic_identities is 0: no training data")
    excluded = split_excluded_people(d.split, lfw_dir(config), d.test_fold)
    for f in d.exclude_people:
        excluded |= set(read_people_list(f))
    dataset = scan_roots(
        d.roots,
        min_images_per_identity=d.min_images_per_identity,
        exclude=excluded,
        max_identities=d.max_identities,
    )
    leak = forbidden & set(dataset.identities)
    if leak:
        raise ValueError(
            f"{len(leak)} validation people are in the training set (e.g. {sorted(leak)[:3]}); "
            "use data.split / data.exclude_people to keep them out"
        )
    cached = build_cache(
        dataset.paths, size, d.cache_dir, d.decode_threads, progress, d.crop_fraction
    )
    keep = np.flatnonzero(cached.ok)
    labels = dataset.labels[keep]
    # why: an identity that lost images to decode errors may fall below the minimum.
    counts = np.bincount(labels, minlength=len(dataset.identities))
    keep = keep[counts[labels] >= d.min_images_per_identity]
    paths = tuple(str(dataset.paths[i]) for i in keep)
    if len(keep) == len(cached.images):
        return TrainData(cached.images, dataset.labels, dataset.identities, paths)
    images = np.asarray(cached.images[keep])
    return TrainData(images, dataset.labels[keep], dataset.identities, paths)


def build_validation(
    config: Config, input_size: tuple[int, int], progress: bool, side: int | None = None
) -> PairSet:
    """The validation pairs named by ``config.validation``; with ``side``, their images as the
    standard ``side`` px face crops another model frames itself (``facenet.train.teacher``)."""
    size = stored_size(config, input_size) if side is None else side
    v = config.validation
    if v.pairs == "synthetic" or (not v.pairs and config.data.synthetic_identities > 0):
        return synthetic_pairs(size, config.seed)
    lfw = lfw_dir(config)
    pairs = v.pairs or (str(default_pairs_path(lfw)) if lfw else "")
    if not pairs or not v.root:
        raise ValueError("validation needs validation.pairs and validation.root (aligned images)")
    return load_lfw_pairs(
        pairs,
        Path(v.root).expanduser(),
        size,
        config.data.cache_dir,
        v.folds,
        progress,
        config.data.crop_fraction if side is None else 1.0,
    )


# --------------------------------------------------------------------------------- batches
class BatchStream:
    """Endless identity-balanced batches for this rank, with a resumable position.

    Wraps ``facenet.data.sampler.IdentityBalancedSampler`` (global batch ``i`` of epoch ``e`` is a
    pure function of (seed, e, i)); the position is (epoch, batches consumed in the epoch).
    """

    def __init__(self, labels: np.ndarray, config: Config, rank: int, world_size: int) -> None:
        s = config.sampler
        self.sampler = IdentityBalancedSampler(
            labels,
            identities_per_batch=s.identities_per_batch,
            images_per_identity=s.images_per_identity,
            extra_negatives=s.extra_negatives,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
        )
        # faces in a global batch (every rank's share together)
        self.global_size = s.identities_per_batch * s.images_per_identity + s.extra_negatives
        self.epoch = 0
        self.batch_in_epoch = 0
        self._it: Iterator[Any] | None = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self._it = iter(self.sampler)

    def next(self) -> np.ndarray:
        """This rank's indices of the next global batch."""
        if self._it is None:
            self._start_epoch()
        while True:
            try:
                batch = next(self._it)
                self.batch_in_epoch += 1
                return np.asarray(batch, dtype=np.int64)
            except StopIteration:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._start_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state at the number of batches *consumed* (no prefetching here)."""
        return {**self.sampler.state_dict(), "epoch": self.epoch, "position": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at (epoch, position); the sampler checks its configuration matches."""
        self.sampler.load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["position"])
        self._it = iter(self.sampler)


def augmented_pixels(
    images: np.ndarray, size: tuple[int, int], config: Config, step: int, stream: int
) -> Tensor:
    """Step ``step``'s augmentation of cached faces into (h, w) = ``size`` crops, drawn from
    ``stream``: float (n, 3, h, w) RGB in [0, 255], on the CPU."""
    rng = step_rng(config.seed, step, stream)
    return augment_batch(images, size, config.data.augment, rng)


def center_window_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """(n, 3, S, S) -> their central (h, w) = ``size`` windows (``facenet.preprocess``'s framing
    of a non-square model inside a square face)."""
    h, w = size
    top, left = (pixels.shape[2] - h) // 2, (pixels.shape[3] - w) // 2
    return pixels[:, :, top : top + h, left : left + w]


def as_input(pixels: Tensor, spec: ModelSpec, config: Config, device: torch.device) -> Tensor:
    """Augmented pixels (``augmented_pixels``) as the model takes them: normalised with
    ``spec``, on ``device``, in the run's memory format."""
    x = normalize(pixels, spec).to(device, non_blocking=True)
    fmt = torch.channels_last if config.model.channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
