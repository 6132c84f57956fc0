"""Offline triplet mining (SPEC §3): every n steps, embed a subset with the current model and mine.

The paper's alternative to mining inside each mini-batch: "generate triplets offline every n
steps, using the most recent network checkpoint and computing the argmin and argmax on a subset
of the data". :class:`OfflineTripletMiner` does that with any rule of
:mod:`facenet.losses.mining`, then serves training batches made of the mined triplets. It lives
with the training code, not the losses, because it draws its subsets with the data sampler and
keeps a position that checkpoints save:

    miner = OfflineTripletMiner(dataset_labels, rule="semi_hard", refresh_every=1000)
    for step in range(steps):
        batch = miner.step(step, embed)          # re-mines when due; embed(indices) -> (n, D)
        emb = model(load_images(batch.indices))  # each image once, even if in several triplets
        loss = triplet_margin_loss(emb, batch.triplets, margin=0.2)

``embed`` is called without gradients, in chunks of ``embed_batch_size`` dataset indices, and
must return L2-normalised embeddings of the current model (eval mode is the caller's choice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facenet.data.sampler import IdentityBalancedSampler
from facenet.losses.distances import pairwise_squared_distances
from facenet.losses.mining import Rule, Triplets, get_rule

EmbedFn = Callable[[Sequence[int]], Tensor]


@dataclass(frozen=True)
class TripletBatch:
    """A training batch built from offline-mined triplets.

    Attributes:
        indices: distinct dataset indices to load and embed, in this order.
        triplets: positions into ``indices`` (so into the batch's embeddings).
    """

    indices: list[int]
    triplets: Triplets


@dataclass(frozen=True)
class OfflineMiningStats:
    """What one refresh found.

    Attributes:
        step: training step of the refresh.
        subset_size: images embedded.
        num_triplets: triplets mined (the pool that batches are drawn from).
        num_pairs: anchor-positive pairs considered.
        pairs_without_negative: pairs that got no triplet under the rule.
    """

    step: int
    subset_size: int
    num_triplets: int
    num_pairs: int
    pairs_without_negative: int


class OfflineTripletMiner:
    """Mine triplets on a subset every ``refresh_every`` steps; serve batches from them.

    Each refresh draws a fresh identity-balanced subset (``identities_per_subset`` x
    ``images_per_identity``, seeded by (seed, refresh number)), embeds it with the caller's
    current model, mines it with ``rule`` and shuffles the resulting triplets into a pool;
    :meth:`next_batch` hands out ``triplets_per_batch`` of them at a time (cycling, reshuffled,
    if the pool runs out before the next refresh).

    Args:
        labels: identity label of every dataset index.
        rule: mining rule (``facenet.losses.RULES``; the paper's ``"semi_hard"`` by default).
        margin: alpha (SPEC §2: 0.2).
        refresh_every: n, steps between refreshes.
        identities_per_subset: identities in each mined subset.
        images_per_identity: images per identity in the subset.
        triplets_per_batch: triplets in each training batch.
        seed: seeds subset choice, mining randomness and batch order.
        embed_batch_size: dataset indices per ``embed`` call.
        small_identity_policy: how identities with fewer images are handled (see
            :class:`~facenet.data.sampler.IdentityBalancedSampler`); the default ``"all"`` takes
            each of their faces once, since with ``"replace"`` a face drawn twice is embedded
            twice identically and pairs with itself.
    """

    def __init__(
        self,
        labels: Sequence[int],
        rule: Rule | str = "semi_hard",
        margin: float = 0.2,
        refresh_every: int = 1000,
        identities_per_subset: int = 200,
        images_per_identity: int = 20,
        triplets_per_batch: int = 600,
        seed: int = 0,
        embed_batch_size: int = 256,
        small_identity_policy: str = "all",
    ) -> None:
        get_rule(rule)  # fail early on an unknown rule
        if refresh_every < 1 or triplets_per_batch < 1 or embed_batch_size < 1:
            raise ValueError("refresh_every, triplets_per_batch and embed_batch_size must be >= 1")
        self.labels = np.asarray(labels)
        self.rule = rule
        self.margin = float(margin)
        self.refresh_every = int(refresh_every)
        self.triplets_per_batch = int(triplets_per_batch)
        self.seed = int(seed)
        self.embed_batch_size = int(embed_batch_size)
        self._subsets = IdentityBalancedSampler(
            self.labels.tolist(),
            identities_per_batch=identities_per_subset,
            images_per_identity=images_per_identity,
            seed=seed,
            small_identity_policy=small_identity_policy,  # type: ignore[arg-type]
            num_batches=1,
        )
        self._refreshes = 0
        self._mined_at: int | None = None
        self._pool = np.empty((0, 3), dtype=np.int64)  # (T, 3) dataset indices (a, p, n)
        self._cursor = 0
        self._passes = 0
        self.last_stats: OfflineMiningStats | None = None

    def needs_refresh(self, step: int) -> bool:
        """True before the first refresh and every ``refresh_every`` steps after the last one."""
        return self._mined_at is None or step - self._mined_at >= self.refresh_every

    @torch.no_grad()
    def refresh(self, embed: EmbedFn, step: int) -> OfflineMiningStats:
        """Embed a new subset with the current model and mine its triplets.

        Args:
            embed: ``embed(dataset_indices) -> (n, D)`` embeddings of the current model.
            step: the training step (recorded; schedules the next refresh).

        Returns:
            :class:`OfflineMiningStats` of this refresh.
        """
        subset = np.asarray(self._subsets.global_batch(0, epoch=self._refreshes), dtype=np.int64)
        parts = []
        for start in range(0, len(subset), self.embed_batch_size):
            chunk = subset[start : start + self.embed_batch_size].tolist()
            out = embed(chunk)
            if out.dim() != 2 or out.shape[0] != len(chunk):
                raise ValueError(
                    f"embed returned shape {tuple(out.shape)} for {len(chunk)} indices; "
                    "expected (n, D)"
                )
            parts.append(out.detach())
        embeddings = torch.cat(parts)  # (S, D)
        labels = torch.as_tensor(self.labels[subset], device=embeddings.device)
        generator = torch.Generator(device=embeddings.device)
        generator.manual_seed(self.seed * 1_000_003 + self._refreshes)
        triplets = get_rule(self.rule)(
            pairwise_squared_distances(embeddings), labels, self.margin, generator, None
        )
        pool = np.stack([subset[t.cpu().numpy()] for t in triplets], axis=1).reshape(-1, 3)
        rng = np.random.default_rng([self.seed, self._refreshes, 2])
        self._pool = pool[rng.permutation(len(pool))]
        self._cursor = 0
        self._passes = 0
        self._mined_at = int(step)
        self._refreshes += 1
        self.last_stats = OfflineMiningStats(
            step=int(step),
            subset_size=len(subset),
            num_triplets=len(pool),
            num_pairs=triplets.num_pairs,
            pairs_without_negative=triplets.pairs_without_negative,
        )
        return self.last_stats

    @property
    def refreshes(self) -> int:
        """Minings done so far."""
        return self._refreshes

    @property
    def pool_size(self) -> int:
        """Triplets mined by the last refresh."""
        return len(self._pool)

    def next_batch(self) -> TripletBatch:
        """The next ``triplets_per_batch`` mined triplets as a :class:`TripletBatch`.

        Returns an empty batch when the last refresh found no triplet (e.g. no semi-hard negative
        anywhere in the subset); ``triplet_margin_loss`` then gives a zero loss.

        Raises:
            RuntimeError: before the first :meth:`refresh`.
        """
        if self._mined_at is None:
            raise RuntimeError("OfflineTripletMiner.next_batch() called before refresh()")
        if len(self._pool) == 0:
            empty = torch.empty(0, dtype=torch.long)
            return TripletBatch([], Triplets(empty, empty, empty))
        take = min(self.triplets_per_batch, len(self._pool))
        if self._cursor + take > len(self._pool):  # pool used up before the next refresh
            self._passes += 1
            rng = np.random.default_rng([self.seed, self._refreshes, 3, self._passes])
            self._pool = self._pool[rng.permutation(len(self._pool))]
            self._cursor = 0
        chosen = self._pool[self._cursor : self._cursor + take]  # (t, 3)
        self._cursor += take
        indices, positions = np.unique(chosen, return_inverse=True)
        positions = torch.from_numpy(positions.reshape(-1, 3).astype(np.int64))
        triplets = Triplets(
            positions[:, 0].contiguous(), positions[:, 1].contiguous(), positions[:, 2].contiguous()
        )
        return TripletBatch([int(i) for i in indices], triplets)

    def step(self, step: int, embed: EmbedFn) -> TripletBatch:
        """Refresh if due (see :meth:`needs_refresh`), then return :meth:`next_batch`."""
        if self.needs_refresh(step):
            self.refresh(embed, step)
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue serving the same batches after a restart."""
        return {
            "refreshes": self._refreshes,
            "mined_at": self._mined_at,
            # why: a tensor, so the checkpoint loads with torch.load(weights_only=True)
            "pool": torch.from_numpy(self._pool.copy()),
            "cursor": self._cursor,
            "passes": self._passes,
            "seed": self.seed,
            "rule": self.rule,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (same labels, rule and seed)."""
        if state["seed"] != self.seed or state["rule"] != self.rule:
            raise ValueError(
                f"miner state is for rule={state['rule']!r}, seed={state['seed']}; "
                f"this miner has rule={self.rule!r}, seed={self.seed}"
            )
        self._refreshes = int(state["refreshes"])
        self._mined_at = None if state["mined_at"] is None else int(state["mined_at"])
        self._pool = np.asarray(state["pool"], dtype=np.int64).reshape(-1, 3)
        self._cursor = int(state["cursor"])
        self._passes = int(state["passes"])
