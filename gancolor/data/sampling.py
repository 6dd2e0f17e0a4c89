"""The order in which training images are seen, as a pure function of (seed, epoch).

Each epoch's permutation and each sample's augmentation seed are derived from the
run's seed and the epoch number alone, never from state that accumulates while
training. That is what makes a resumed run exact: to continue at batch b of epoch e,
the sampler recomputes epoch e and starts b batches in. It also makes augmentation
independent of the number of DataLoader workers (a sample's crop does not depend on
which worker happened to load it) and gives each DDP rank a disjoint shard.

The sampler yields (index, sample_seed) pairs; the datasets reseed their augmentation
with sample_seed before transforming image `index`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        repeats: int = 1,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items = num_items
        self.seed = seed
        self.repeats = repeats
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to iterate; skip its first `start` samples (of this rank)."""
        self.epoch = int(epoch)
        self.start = int(start)

    def shard(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's (indices, sample seeds) for the current epoch, before skipping."""
        rng = np.random.default_rng([self.seed, self.epoch])
        passes = [rng.permutation(self.num_items) if self.shuffle else np.arange(self.num_items) for _ in range(self.repeats)]
        order = np.concatenate(passes) if passes else np.arange(0)
        seeds = rng.integers(0, 2**62, size=len(order))
        # Pad by wrapping so every rank gets the same number of samples (as
        # DistributedSampler does); with one process nothing is padded.
        total = -(-len(order) // self.world_size) * self.world_size
        if total > len(order):
            extra = total - len(order)
            order, seeds = np.concatenate([order, order[:extra]]), np.concatenate([seeds, seeds[:extra]])
        return order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self.shard()
        for index, seed in zip(order[self.start :].tolist(), seeds[self.start :].tolist()):
            yield index, seed

    def __len__(self) -> int:
        per_rank = -(-self.num_items * self.repeats // self.world_size)
        return max(0, per_rank - self.start)
