"""Identity-balanced batches: P identities x K images (+ extra random negatives), seeded, resumable.

FaceNet mines triplets inside each mini-batch, so every batch must hold several images of each
identity it contains: the paper used about 1,800 exemplars with about 40 faces per identity, plus
randomly sampled negative faces (SPEC §3). :class:`IdentityBalancedSampler` yields such batches as
lists of dataset indices, for ``DataLoader(dataset, batch_sampler=sampler)``.

Determinism: the *global* batch number ``i`` of epoch ``e`` is a pure function of
``(labels, identities_per_batch, images_per_identity, extra_negatives, small_identity_policy,
seed, e, i)``: the identity order of an epoch comes from a generator seeded by
``(seed, epoch, pass)``, the images of batch ``i`` from one seeded by ``(seed, epoch, i)``. Nothing
touches global random state, skipping ahead is O(1), a run resumed from ``state_dict()`` continues
bit-exactly, and the sequence of global batches does not depend on the number of processes.

Distributed training: with ``world_size = W`` every rank computes the same global batch and
yields its own disjoint share. The identity part (identity-major: the K images of the first
identity, then the next ...) and the extra negatives are each split into W contiguous, nearly
equal parts; rank r gets ``identities_r + extras_r``. When P is divisible by W (and every
identity contributes K images, i.e. not the ``"all"`` policy with small identities), each
rank's share is itself P/W whole identities x K images, so even per-rank mining would see complete
identities. Otherwise an identity may straddle two ranks — harmless when mining over the global
batch (``facenet.losses.triplet_loss(..., distributed=True)``), which gathers all shares in rank
order, i.e. exactly :meth:`IdentityBalancedSampler.global_batch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

SmallIdentityPolicy = Literal["replace", "skip", "all"]
_POLICIES = ("replace", "skip", "all")


class IdentityBalancedSampler:
    """Batches of P identities x K images, plus optional extra negatives, as dataset indices.

    Identities with a single image never form a batch identity (they have no positive); they can
    still be drawn as extra negatives. Identities with ``2 <= n < K`` images follow
    ``small_identity_policy``:

    * ``"replace"`` (default): all n images, topped up to K by drawing among them with replacement
      (duplicated images are fine: augmentation makes them differ, and the batch stays P x K);
    * ``"skip"``: the identity is never a batch identity (it can still be an extra negative);
    * ``"all"``: all n images once, so such batches are smaller than P x K.

    An epoch is one pass over the eligible identities in a seeded random order, P per batch; the
    leftover identities (fewer than P) wait for the next epoch's order. ``num_batches`` sets a
    different epoch length: further passes use fresh orders. Each identity contributes K images
    drawn without replacement from its own images.

    Args:
        labels: identity label of every dataset index (``labels[i]`` for image ``i``).
        identities_per_batch: P (the paper: ~1,800 exemplars / ~40 per identity = ~45).
        images_per_identity: K, at least 2 (the paper: ~40).
        extra_negatives: E extra images per global batch, each of a distinct identity that is not
            among the batch's P (the paper's "randomly sampled negative faces").
        seed: base seed; batches depend on (seed, epoch, batch index).
        rank: this process's rank (0 <= rank < world_size).
        world_size: number of processes sharing each global batch.
        small_identity_policy: ``"replace"``, ``"skip"`` or ``"all"`` (see above).
        num_batches: batches per epoch (default: one pass over the eligible identities).
    """

    def __init__(
        self,
        labels: Sequence[int],
        identities_per_batch: int = 45,
        images_per_identity: int = 40,
        extra_negatives: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        small_identity_policy: SmallIdentityPolicy = "replace",
        num_batches: int | None = None,
    ) -> None:
        if small_identity_policy not in _POLICIES:
            raise ValueError(
                f"small_identity_policy must be one of {', '.join(_POLICIES)}, got {small_identity_policy!r}"
            )
        if images_per_identity < 2:
            raise ValueError(
                f"images_per_identity must be >= 2 (a positive pair), got {images_per_identity}"
            )
        if identities_per_batch < 1:
            raise ValueError(f"identities_per_batch must be >= 1, got {identities_per_batch}")
        if extra_negatives < 0:
            raise ValueError(f"extra_negatives must be >= 0, got {extra_negatives}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if num_batches is not None and num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")

        label_array = np.asarray(labels)
        if label_array.ndim != 1 or (
            label_array.size and not np.issubdtype(label_array.dtype, np.integer)
        ):
            raise ValueError("labels must be a 1-D sequence of integer identity labels")
        self.identities_per_batch = int(identities_per_batch)
        self.images_per_identity = int(images_per_identity)
        self.extra_negatives = int(extra_negatives)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.small_identity_policy: SmallIdentityPolicy = small_identity_policy
        self.epoch = 0
        self._position = 0  # global batches of this epoch already yielded

        # Images of every identity, ascending dataset index.
        self._identities, inverse, counts = np.unique(
            label_array, return_inverse=True, return_counts=True
        )
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(counts)[:-1]) if counts.size else []
        minimum = self.images_per_identity if small_identity_policy == "skip" else 2
        self._eligible = np.flatnonzero(
            counts >= minimum
        )  # identity numbers usable as batch identities
        self._num_labels = int(label_array.size)
        if self._eligible.size < self.identities_per_batch:
            raise ValueError(
                f"only {self._eligible.size} identities have enough images "
                f"(>= {minimum}, policy {small_identity_policy!r}) for batches of "
                f"{self.identities_per_batch} identities"
            )
        if self.extra_negatives > len(self._identities) - self.identities_per_batch:
            raise ValueError(
                f"extra_negatives={self.extra_negatives} needs that many identities besides the "
                f"batch's {self.identities_per_batch}, but the dataset has {len(self._identities)}"
            )
        if self.world_size > self.identities_per_batch * 2 + self.extra_negatives:
            raise ValueError(
                f"world_size={self.world_size} exceeds the smallest possible global batch"
            )
        self._per_pass = self._eligible.size // self.identities_per_batch
        self._order_key: tuple[int, int] | None = None
        self._order = self._eligible
        self._num_batches = self._per_pass if num_batches is None else int(num_batches)

    # -- sizes -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self._num_batches

    @property
    def global_batch_size(self) -> int:
        """P x K + E (batches with small identities under the ``"all"`` policy are smaller)."""
        return self.identities_per_batch * self.images_per_identity + self.extra_negatives

    # -- epochs and resuming --------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a *new* epoch starts at its first batch.

        Setting the epoch that is already selected keeps the position, so the usual
        ``load_state_dict(...)`` then ``for epoch in ...: sampler.set_epoch(epoch)`` resumes
        mid-epoch instead of restarting it.
        """
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._position = 0

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler is: epoch and global batches already yielded this epoch.

        With a ``DataLoader`` that prefetches, the sampler runs ahead of training; save the number
        of batches the loop has *consumed* instead: ``{**sampler.state_dict(), "position": n}``.
        """
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "identities_per_batch": self.identities_per_batch,
            "images_per_identity": self.images_per_identity,
            "extra_negatives": self.extra_negatives,
            "small_identity_policy": self.small_identity_policy,
            "num_labels": self._num_labels,
            "num_batches": self._num_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state["epoch"]``, batch ``state["position"]`` (world size may differ).

        Raises:
            ValueError: the state came from a sampler with a different configuration, which
                would silently produce different batches.
        """
        for key in (
            "seed",
            "identities_per_batch",
            "images_per_identity",
            "extra_negatives",
            "small_identity_policy",
            "num_labels",
            "num_batches",
        ):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise ValueError(
                    f"sampler state has {key}={state[key]!r}, this sampler has {mine!r}"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"position {position} is outside 0..{len(self)}")
        self.epoch = int(state["epoch"])
        self._position = position

    # -- batches --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's share of each remaining global batch of the epoch."""
        while self._position < len(self):
            index = self._position
            self._position += 1
            yield self.shares(index)[self.rank]
        self._position = 0  # a finished epoch can be iterated again from its start

    def global_batch(self, index: int, epoch: int | None = None) -> list[int]:
        """Global batch ``index`` of ``epoch`` (default: the current one), in rank order.

        It is the concatenation of every rank's share, i.e. the order in which
        ``gather_with_grad`` assembles the embeddings.
        """
        return [i for share in self.shares(index, epoch) for i in share]

    def shares(self, index: int, epoch: int | None = None) -> list[list[int]]:
        """The W per-rank shares of global batch ``index`` (see the module docstring)."""
        identity_part, extras = self._draw(index, self.epoch if epoch is None else int(epoch))
        id_parts = np.array_split(identity_part, self.world_size)
        extra_parts = np.array_split(extras, self.world_size)
        return [
            [int(i) for i in np.concatenate([ids, ex])]
            for ids, ex in zip(id_parts, extra_parts, strict=True)
        ]

    def batch_identities(self, index: int, epoch: int | None = None) -> list[int]:
        """The P identity labels of global batch ``index`` (in batch order)."""
        epoch = self.epoch if epoch is None else int(epoch)
        return [int(self._identities[i]) for i in self._batch_identity_numbers(index, epoch)]

    def _batch_identity_numbers(self, index: int, epoch: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} outside 0..{len(self) - 1}")
        passes, slot = divmod(index, self._per_pass)
        key = (epoch, passes)
        if self._order_key != key:  # one permutation per pass, reused by its batches
            self._order = np.random.default_rng([self.seed, epoch, passes, 0]).permutation(
                self._eligible
            )
            self._order_key = key
        order = self._order
        p = self.identities_per_batch
        return order[slot * p : (slot + 1) * p]

    def _draw(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(identity-major indices of the P identities, E extra negatives) of one global batch."""
        chosen = self._batch_identity_numbers(index, epoch)
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        k = self.images_per_identity
        blocks = []
        for identity in chosen:
            members = self._members[identity]
            if members.size >= k:
                picked = rng.choice(members, size=k, replace=False)
            elif self.small_identity_policy == "replace":
                topup = rng.choice(members, size=k - members.size, replace=True)
                picked = np.concatenate([rng.permutation(members), topup])
            else:  # "all" ("skip" never reaches here: such identities are not eligible)
                picked = rng.permutation(members)
            blocks.append(picked)
        identity_part = np.concatenate(blocks) if blocks else np.empty(0, dtype=np.int64)
        extras = np.empty(0, dtype=np.int64)
        if self.extra_negatives:
            others = np.setdiff1d(np.arange(len(self._identities)), chosen, assume_unique=True)
            extra_ids = rng.choice(others, size=self.extra_negatives, replace=False)
            extras = np.array([rng.choice(self._members[i]) for i in extra_ids], dtype=np.int64)
        return identity_part.astype(np.int64), extras
