"""pix2pix's paired data (data=aligned): "A|B" files, input and colour target side by side."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from gancolor.data.datamodule import FolderDataModule
from gancolor.data.datasets import AlignedDataset, _SkippingDataset
from gancolor.data.transforms import eval_transform, train_transform

log = logging.getLogger("gancolor.data")

# The pix2pix datasets (facades, maps, cityscapes, edges2shoes, night2day) all have square
# halves; ordinary landscape photos read as A|B have halves of 2:3 or 3:4.
SQUARE_HALF_TOLERANCE = 0.1
SHAPE_SAMPLE = 64  # files whose headers are read for the check (no pixels are decoded)


class AlignedDataModule(FolderDataModule):
    """pix2pix-style paired data: each file is input and target side by side ("A|B").

    Reads root/train and root/val (or root/test when there is no val/); without those
    subfolders the files under root are split by seed like FolderDataModule. With
    direction "AtoB" the right half (B) is the colour target and the left half the
    input; "BtoA" swaps them. Batches carry "input_rgb" next to "rgb".
    """

    _val_dir_names = ("val", "test")

    def __init__(self, root: str | os.PathLike[str], direction: str = "AtoB", **options: Any) -> None:
        # The other options are FolderDataModule's (image_size, batch_size, ...).
        super().__init__(root, **options)
        # Validate now rather than at setup(): a typo should fail before any scan.
        AlignedDataset([], None, direction)
        self.direction = direction

    def setup(self) -> None:
        first = self._train is None
        super().setup()
        if first:
            warn_if_not_side_by_side(self._train.paths)

    def _make_dataset(self, paths: Sequence[Path], train: bool) -> _SkippingDataset:
        if train:
            transform = train_transform(self.image_size, (self.scale_min, 1.0), paired=True, resize_to=self.resize_to)
        else:
            transform = eval_transform(self.image_size, paired=True, resize_to=self.resize_to)
        return AlignedDataset(paths, transform, self.direction)


def warn_if_not_side_by_side(paths: Sequence[Path]) -> None:
    """One warning when most files' halves are far from square: A|B files have the
    input and the target side by side, and ordinary photos given to data=aligned
    would silently train their left half to become their right half."""
    sample = list(paths)[:: max(1, len(paths) // SHAPE_SAMPLE)][:SHAPE_SAMPLE]
    odd = []
    for path in sample:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError:
            continue  # the scan has reported it
        if abs((width / 2) / height - 1) > SQUARE_HALF_TOLERANCE:
            odd.append((path, width, height))
    if sample and len(odd) * 2 > len(sample):
        path, width, height = odd[0]
        log.warning(
            "data: %d of %d files checked have halves far from square (e.g. %s: %dx%d, halves %dx%d): data=aligned reads "
            "each file as input | target side by side (pix2pix's A|B); for ordinary colour photos use data=folder",
            len(odd), len(sample), Path(path).name, width, height, width // 2, height,
        )
