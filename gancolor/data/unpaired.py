"""CycleGAN's unpaired data (data=unpaired): a set A of grayscale photos and a set B of colour
photos, never of the same scenes.

Two layouts (`data.root`):

    root/trainA, root/trainB [, root/testA, root/testB]   pytorch-CycleGAN-and-pix2pix's
        A is read as gray (a colour file there is desaturated), B must be colour.
        Validation uses testB (or valB); without it, a seeded part of trainB.
        A root with only one of trainA/ and trainB/ is refused: a folder is missing.
    any other folder of colour photos (or data.root=null: the bundled sample photos)
        split like FolderDataModule into train/val; the training photos are then split by
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

from gancolor import color

# SampleRootFallback, defaults_for, readable_images and UnpairedDataset were defined here
# before they moved to the base module and to datasets.py; they stay importable from here.
from gancolor.data.datamodule import (
    FolderDataModule,
    SampleRootFallback,
    defaults_for,
    readable_images,
    seeded_split,
)
from gancolor.data.datasets import ColorImageDataset, UnpairedDataset
from gancolor.data.images import find_images
from gancolor.data.transforms import eval_transform, train_transform
from gancolor.errors import DataError

log = logging.getLogger("gancolor.data")


class UnpairedDataModule(SampleRootFallback, FolderDataModule):
    """CycleGAN's two domains from one or two folders; see the module docstring.

    `root=None` uses the bundled sample photos (written to `cache_dir`, as SampleDataModule).
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
        missing_half_of_the_layout(root)
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


def missing_half_of_the_layout(root: Path) -> None:
    """A root with trainA/ but no trainB/ (or the reverse) is a CycleGAN layout with a
    folder missing, almost surely not a folder of colour photos to split: training on
    one half's photos alone, in the other layout, would be a quiet mistake."""
    has = {name: (root / name).is_dir() for name in ("trainA", "trainB")}
    if has["trainA"] != has["trainB"]:
        present, missing = ("trainA", "trainB") if has["trainA"] else ("trainB", "trainA")
        raise DataError(
            f"data.root: {root} has {present}/ but no {missing}/: the CycleGAN layout needs both "
            f"(trainA/ gray, trainB/ colour); add {root / missing}, or give a folder of colour photos "
            f"without trainA/ and trainB/ to split into A and B"
        )


def disjoint_halves(paths: Sequence[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """Split `paths` by `seed` into two disjoint sorted halves (B gets the odd one)."""
    ordered = sorted(paths, key=lambda p: p.as_posix())
    # A stream of its own, so this split does not repeat the train/val split's draws.
    order = np.random.default_rng([seed, 1]).permutation(len(ordered))
    half = len(ordered) // 2
    a = sorted((ordered[i] for i in order[:half]), key=lambda p: p.as_posix())
    b = sorted((ordered[i] for i in order[half:]), key=lambda p: p.as_posix())
    return a, b


# Checkpoints and run configs store the `_target_` they were trained with:
# gancolor.data.unpaired.UnpairedData (and gancolor.data.UnpairedData) must keep resolving.
UnpairedData = UnpairedDataModule
