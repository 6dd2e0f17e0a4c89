"""Every torch Dataset of gancolor.data: map-style, yielding augmented uint8 RGB ready
for default collation. The data modules (gancolor.data.datamodule and its families)
build them.

Items are dicts: "rgb" is a uint8 (3, H, W) tensor, the colour target; "path" the
source file as a string; AlignedDataset adds "input_rgb", the aligned input image;
DomainImageDataset adds "domain" and "index"; UnpairedDataset yields an "A" and a "B"
image instead of "rgb".

Files were vetted by the scan, but a file can change or vanish between the scan and
the epoch that reads it; such a file is skipped (the batch takes the next good image)
with one warning naming it and counting all such files so far, rather than ending a
run hours in. Only when more than `max_unreadable_share` of the images have gone bad
does the run stop, with one line (TooManyUnreadable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gancolor.data.images import UnreadableImage, load_rgb
from gancolor.data.transforms import PAIRED_TARGET
from gancolor.errors import ConfigError, DataError

log = logging.getLogger("gancolor.data")

Transform = Callable[..., dict[str, Any]]
DIRECTIONS = ("AtoB", "BtoA")


DEFAULT_MAX_UNREADABLE_SHARE = 0.1


class TooManyUnreadable(DataError):
    """More of a dataset's images went bad after the scan than the run tolerates.

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from
    the worker's formatted traceback; only the original message is kept, so the user
    still reads one line.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if "Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


class _SkippingDataset(Dataset):
    """Shared load-or-skip logic; subclasses only say how to build one item."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: Transform | None = None,
        max_unreadable_share: float = DEFAULT_MAX_UNREADABLE_SHARE,
    ) -> None:
        # Plain strings pickle small and fast into every worker.
        self.paths = [os.fspath(p) for p in paths]
        self.transform = transform
        self.max_unreadable_share = max_unreadable_share
        # Which files went bad, in shared memory that the DataLoader workers inherit:
        # each file is named once whichever worker meets it first, and the count that
        # stops the run covers all of them.
        self._unreadable = torch.zeros(len(self.paths), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):
            # (index, sample_seed) from EpochSampler: the crop and flip of this sample
            # depend on the seed alone, not on what this worker loaded before.
            index, sample_seed = index
            self.reseed(sample_seed)
        if not self.paths:
            raise IndexError(index)
        n = len(self.paths)
        for step in range(n):
            i = (index + step) % n
            if self._unreadable[i]:
                continue
            try:
                return self._item(self.paths[i])
            except UnreadableImage as exc:
                self._give_up_on(i, exc)
        raise DataError(f"none of the {n} images in this dataset can be read any more (first: {self.paths[0]})")

    def _give_up_on(self, i: int, exc: UnreadableImage) -> None:
        if self._unreadable[i]:
            return  # another worker met it at the same moment and has said so
        self._unreadable[i] = True
        bad, n = int(self._unreadable.sum()), len(self.paths)
        log.warning("skipping %s, unreadable since the scan (%s): %d of %d images skipped so far", exc.path, exc.reason, bad, n)
        if bad > self.max_unreadable_share * n:
            raise TooManyUnreadable(
                f"{bad} of {n} images became unreadable after the scan (latest: {exc.path}), more than "
                f"data.max_unreadable_share={self.max_unreadable_share:g} of them: is the data folder still there?"
            )

    def set_max_unreadable_share(self, share: float) -> None:
        self.max_unreadable_share = share

    # Large JPEGs are decoded reduced (libjpeg's draft mode) down to this short side.
    decode_min_side: int | None = None

    def set_decode_min_side(self, side: int | None) -> None:
        self.decode_min_side = side

    def reseed(self, seed: int) -> None:
        """Seed the augmentation's own random state (albumentations ignores numpy's)."""
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(seed)

    def _item(self, path: str) -> dict[str, Any]:
        raise NotImplementedError


class ColorImageDataset(_SkippingDataset):
    """Colour photos -> {"rgb": uint8 (3, H, W), "path": str}."""

    def _item(self, path: str) -> dict[str, Any]:
        rgb = load_rgb(path, min_side=self.decode_min_side)
        if self.transform is not None:
            rgb = self.transform(image=rgb)["image"]
        return {"rgb": hwc_to_chw(rgb), "path": path}


class AlignedDataset(_SkippingDataset):
    """pix2pix "A|B" images (two aligned halves side by side) -> a training pair.

    The target half (B for "AtoB", A for "BtoA") is the colour image, "rgb"; the other
    half is "input_rgb". The transform must be built with paired=True so both halves
    get the same crop and flip.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: Transform | None = None,
        direction: str = "AtoB",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(f"data.direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        super().__init__(paths, transform)
        self.direction = direction

    def _item(self, path: str) -> dict[str, Any]:
        a, b = split_halves(load_rgb(path), path)
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        if self.transform is not None:
            out = self.transform(image=target, **{PAIRED_TARGET: source})
            target, source = out["image"], out[PAIRED_TARGET]
        return {"rgb": hwc_to_chw(target), PAIRED_TARGET: hwc_to_chw(source), "path": path}


class DomainImageDataset(ColorImageDataset):
    """Colour photos with their domain label and dataset index:
    {"rgb": uint8 (3, H, W), "path": str, "domain": int (-1: assigned later), "index": int}."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: Transform | None,
        labels: Sequence[int] | None = None,
    ) -> None:
        super().__init__(paths, transform)
        # By path, not position: a file that turns unreadable is replaced by the next one,
        # whose label must come with it.
        self.labels = dict(zip(self.paths, labels)) if labels is not None else {}

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        item = super().__getitem__(index)
        position = index[0] if isinstance(index, tuple) else index  # (index, sample_seed) from EpochSampler
        return {**item, "domain": self.labels.get(item["path"], -1), "index": position}


class UnpairedDataset(Dataset):
    """A[i] with a random B: {"A": uint8 (3, H, W), "B": uint8 (3, H, W), "path", "path_B"}.

    One epoch visits every A image (or, when B is the larger set, indexes cycle over
    A for max(|A|, |B|) items, as the reference does). Given (index, sample_seed), as
    EpochSampler hands them out, the B image and both crops are a function of the seed
    alone, so a resumed run pairs the same images; a plain index draws B from this
    dataset's own generator (reseeded by `reseed`).
    """

    def __init__(self, a: ColorImageDataset, b: ColorImageDataset) -> None:
        self.a, self.b = a, b
        self._rng = np.random.default_rng(0)

    @property
    def paths(self) -> list[str]:
        return self.a.paths + self.b.paths

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):
            index, sample_seed = index
            rng = np.random.default_rng([sample_seed, 2])
            b_index, b_seed = int(rng.integers(len(self.b))), int(rng.integers(2**62))
            item_a = self.a[(index % len(self.a), sample_seed)]
            item_b = self.b[(b_index, b_seed)]
        else:
            item_a = self.a[index % len(self.a)]
            item_b = self.b[int(self._rng.integers(len(self.b)))]
        return {"A": item_a["rgb"], "B": item_b["rgb"], "path": item_a["path"], "path_B": item_b["path"]}

    def set_max_unreadable_share(self, share: float) -> None:
        self.a.set_max_unreadable_share(share)
        self.b.set_max_unreadable_share(share)

    def set_decode_min_side(self, side: int | None) -> None:
        self.a.set_decode_min_side(side)
        self.b.set_decode_min_side(side)

    def reseed(self, seed: int) -> None:
        # A and B have separate augmentation pipelines; each gets its own stream.
        self.a.reseed(seed)
        self.b.reseed(seed + 1)
        self._rng = np.random.default_rng([seed, 2])


def split_halves(image: np.ndarray, path: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """Left and right halves of equal width (an odd last column is dropped)."""
    half = image.shape[1] // 2
    if half == 0:
        raise UnreadableImage(path, f"too narrow ({image.shape[1]} px) to hold an A|B pair")
    return image[:, :half], image[:, half : 2 * half]


def hwc_to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) array -> contiguous uint8 (3, H, W) tensor for collation."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class AttributesDataset(ColorImageDataset):
    """Colour photos with their attributes:
    {"rgb": uint8 (3, H, W), "path": str, "attributes": float32 (K,) of 0/1}."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: Transform | None,
        attributes: torch.Tensor,
    ) -> None:
        super().__init__(paths, transform)
        if len(attributes) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(attributes)} attribute rows")
        self.attributes = attributes.float()
        # By path, not position: a file that turns unreadable is replaced by the next
        # one, whose attributes must come with it.
        self.rows = {path: i for i, path in enumerate(self.paths)}

    def _item(self, path: str) -> dict[str, Any]:
        return {**super()._item(path), "attributes": self.attributes[self.rows[path]].clone()}
