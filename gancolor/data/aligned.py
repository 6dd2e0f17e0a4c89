"""pix2pix's paired data (data=aligned): "A|B" files, input and colour target side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gancolor.data.datamodule import FolderDataModule
from gancolor.data.datasets import AlignedDataset, _SkippingDataset
from gancolor.data.transforms import eval_transform, train_transform


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

    def _make_dataset(self, paths: Sequence[Path], train: bool) -> _SkippingDataset:
        if train:
            transform = train_transform(self.image_size, (self.scale_min, 1.0), paired=True, resize_to=self.resize_to)
        else:
            transform = eval_transform(self.image_size, paired=True, resize_to=self.resize_to)
        return AlignedDataset(paths, transform, self.direction)
