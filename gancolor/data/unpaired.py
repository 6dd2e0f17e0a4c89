"""Unpaired data for CycleGAN: a set A of grayscale photos and a set B of colour
photos, never of the same scenes.

Two layouts (`data.root`):

    root/trainA, root/trainB [, root/testA, root/testB]   pytorch-CycleGAN-and-pix2pix's
        A is read as gray (a colour file there is desaturated), B must be colour.
        Validation uses testB (or valB); without it, a seeded part of trainB.
    any other folder of colour photos (or data.root=null: the bundled sample photos)
        split like FolderData into train/val; the training photos are then split by
        seed into two disjoint halves: A is the gray version of one half, B the other
        half in colour, so no image is ever seen both gray and in colour.

Training batches pair each A image with a B image drawn at random (as the reference
does); `device_batch` gives the recipe {"A": gray sRGB, "B": colour sRGB}, float in
[0, 1] on the device, and the recipe encodes them into its own colour space.
Validation batches are colour photos ("rgb") like every other data set, so the
trainer validates a CycleGAN exactly as it validates pix2pix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gancolor import color
from gancolor.data.datamodule import FolderData, sample_cache_dir, seeded_split, write_sample_photos
from gancolor.data.datasets import ColorImageDataset
from gancolor.data.images import find_images
from gancolor.data.scan import scan_color_images
from gancolor.data.transforms import eval_transform, train_transform
from gancolor.errors import DataError

log = logging.getLogger("gancolor.data")

# On the handful of sample photos an epoch must be several passes and a quarter is held
# out (as data=sample); on a real folder one pass and a tenth.
SAMPLE_DEFAULTS = {"val_fraction": 0.25, "repeats": 6}
FOLDER_DEFAULTS = {"val_fraction": 0.1, "repeats": 1}


def defaults_for(root: Any, val_fraction: float | None, repeats: int | None) -> tuple[float, int]:
    """Fill null val_fraction / repeats with the sample or folder defaults."""
    preset = SAMPLE_DEFAULTS if root is None else FOLDER_DEFAULTS
    return (
        preset["val_fraction"] if val_fraction is None else float(val_fraction),
        preset["repeats"] if repeats is None else int(repeats),
    )


def readable_images(paths: list[Path], where: Path) -> list[Path]:
    """The decodable files among `paths`, gray or colour (unreadable ones are logged)."""
    scan = scan_color_images(paths)
    for path, reason in scan.unreadable:
        log.warning("skipping unreadable image %s: %s", path, reason)
    keep = set(scan.good) | set(scan.grayscale)
    readable = [p for p in paths if p in keep]
    if not readable:
        raise DataError(f"data.root: no readable images under {where} ({len(scan.unreadable)} unreadable)")
    return readable


class SampleRootFallback:
    """For FolderData subclasses: `root=None` means the bundled sample photos, written
    once to `cache_dir` (default as SampleData's), so the model's own data group runs
    out of the box."""

    root: Any
    cache_dir: Any

    def _resolved_root(self) -> Path:
        if self.root is None:
            folder = sample_cache_dir(self.cache_dir)
            write_sample_photos(folder)
            return folder
        return super()._resolved_root()  # type: ignore[misc]


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

    def reseed(self, seed: int) -> None:
        # A and B have separate augmentation pipelines; each gets its own stream.
        self.a.reseed(seed)
        self.b.reseed(seed + 1)
        self._rng = np.random.default_rng([seed, 2])


class UnpairedData(SampleRootFallback, FolderData):
    """CycleGAN's two domains from one or two folders; see the module docstring.

    `root=None` uses the bundled sample photos (written to `cache_dir`, as SampleData).
    `val_fraction` and `repeats` default (null) to 0.25 and 6 on the sample photos,
    0.1 and 1 on a folder.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        image_size: int = 128,
        batch_size: int = 1,
        num_workers: int = 2,
        val_fraction: float | None = None,
        seed: int = 0,
        scale_min: float = 0.5,
        max_images: int | None = None,
        repeats: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        resize_to: int | None = None,
    ) -> None:
        val_fraction, repeats = defaults_for(root, val_fraction, repeats)
        super().__init__(
            root, image_size, batch_size, num_workers, val_fraction, seed, scale_min, max_images, repeats, resize_to
        )
        self.cache_dir = cache_dir
        self.a_paths: list[Path] = []
        self.b_paths: list[Path] = []

    def setup(self) -> None:
        if self._train is not None:
            return
        root = self._resolved_root()
        if (root / "trainA").is_dir() and (root / "trainB").is_dir():
            a, b, val = self._two_folders(root)
            how = "trainA/trainB"
        else:
            train, val = self._split(root)
            if len(train) < 2:
                raise DataError(
                    f"data.root: need at least 2 training photos to split into A and B under {root}, got {len(train)}"
                )
            a, b = disjoint_halves(train, self.seed)
            how = "one folder, A = gray of one half, B = the other half"
        self.a_paths, self.b_paths = a, b
        # Separate pipelines: A and B are cropped and flipped independently.
        scale = (self.scale_min, 1.0)
        self._train = UnpairedDataset(
            ColorImageDataset(a, train_transform(self.image_size, scale, resize_to=self.resize_to)),
            ColorImageDataset(b, train_transform(self.image_size, scale, resize_to=self.resize_to)),
        )
        self._val = ColorImageDataset(val, eval_transform(self.image_size, resize_to=self.resize_to))
        log.info("data: %d A (gray), %d B (colour), %d validation images from %s (%s)", len(a), len(b), len(val), root, how)

    def device_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """{"A": the gray version of the A photos, "B": the colour photos}, sRGB in [0, 1]."""
        A = color.uint8_to_float(batch["A"].to(device, non_blocking=True))
        B = color.uint8_to_float(batch["B"].to(device, non_blocking=True))
        return {"A": color.apply_color_transform("gray", A), "B": B}

    # -- internals ----------------------------------------------------------------
    def _two_folders(self, root: Path) -> tuple[list[Path], list[Path], list[Path]]:
        a = self._cap(find_images(root / "trainA"))
        b = self._cap(find_images(root / "trainB"))
        for name, found in (("trainA", a), ("trainB", b)):
            if not found:
                raise DataError(f"data.root: no images under {root / name}")
        a = readable_images(a, root / "trainA")
        b = self._scan(b, root / "trainB").good
        val_dir = next((root / n for n in ("valB", "testB") if (root / n).is_dir()), None)
        if val_dir is None:
            b, val = seeded_split(b, self.val_fraction, self.seed)
        else:
            candidates = self._cap(find_images(val_dir))
            val = self._scan(candidates, val_dir).good if candidates else []
        if not val:
            log.warning("data: no colour validation images for %s; validation is skipped", root)
        return a, b, val


def disjoint_halves(paths: Sequence[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """Split `paths` by `seed` into two disjoint sorted halves (B gets the odd one)."""
    ordered = sorted(paths, key=lambda p: p.as_posix())
    # A stream of its own, so this split does not repeat the train/val split's draws.
    order = np.random.default_rng([seed, 1]).permutation(len(ordered))
    half = len(ordered) // 2
    a = sorted((ordered[i] for i in order[:half]), key=lambda p: p.as_posix())
    b = sorted((ordered[i] for i in order[half:]), key=lambda p: p.as_posix())
    return a, b
