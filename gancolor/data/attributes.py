"""Multi-label attributes for StarGAN (Choi et al. 2018, the CelebA setting): each photo
has K binary attributes, and the generator translates it to any attribute vector.

The photos are the image files under `root`; their attributes come from a text file
in CelebA's `list_attr_celeba.txt` format:

    202599                                    the number of images
    5_o_Clock_Shadow Arched_Eyebrows ...      the attribute names
    000001.jpg -1  1  1 -1 ...                a file name (relative to root), then 1 or -1
                                              (0 is read as -1) per attribute

`selected_attrs` picks the columns, in the order the recipe's label vectors use
(yunjey/stargan's --selected_attrs). Image files the attribute file does not list are
not used. A seeded `val_fraction` of the listed colour photos is held out, and
validation colourises those like every other data set.

`device_batch` gives the recipe {"image": sRGB float in [0, 1], "attributes": float
(N, K) of 0/1} on the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gancolor import color
from gancolor.data.datamodule import FolderDataModule, seeded_split
from gancolor.data.datasets import AttributesDataset, ColorImageDataset
from gancolor.data.images import find_images
from gancolor.data.transforms import eval_transform, train_transform
from gancolor.errors import ConfigError, DataError

log = logging.getLogger("gancolor.data")

ATTRIBUTE_FILE = "list_attr_celeba.txt"
# CelebA writes -1 for "absent"; some copies of it write 0.
ATTRIBUTE_VALUES = {"1": 1.0, "-1": 0.0, "0": 0.0}


class AttributesDataModule(FolderDataModule):
    """Photos under `root` with the attributes `attr_file` gives them; see the module
    docstring. `attr_file` null means root/list_attr_celeba.txt. The other options are
    FolderDataModule's (num_workers, seed, scale_min, max_images, repeats, resize_to); the
    defaults that differ are yunjey/stargan's size and batch, and a 1% validation part.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        selected_attrs: Sequence[str],
        attr_file: str | os.PathLike[str] | None = None,
        *,
        image_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.01,
        **options: Any,
    ) -> None:
        if root is None:
            raise ConfigError(f"data.root: data=attributes needs the folder of photos that its attribute file ({ATTRIBUTE_FILE}) lists")
        super().__init__(root, image_size=image_size, batch_size=batch_size, val_fraction=val_fraction, **options)
        self.selected_attrs = check_selected_attrs(selected_attrs)
        self.attr_file = attr_file

    def setup(self) -> None:
        if self._train is not None:
            return
        root = self._resolved_root()
        attr_path = Path(os.path.expanduser(os.fspath(self.attr_file))) if self.attr_file is not None else root / ATTRIBUTE_FILE
        table = read_attribute_file(attr_path, self.selected_attrs)
        found = find_images(root)
        listed = [p for p in found if p.relative_to(root).as_posix() in table]
        if not listed:
            raise DataError(f"data.root: none of the {len(found)} images under {root} is listed in {attr_path}")
        if len(listed) < len(found):
            log.info("data: %d images under %s are not in %s and are not used", len(found) - len(listed), root, attr_path)
        train, val = seeded_split(self._scan(self._cap(listed), root).good, self.val_fraction, self.seed)
        rows = torch.tensor([table[p.relative_to(root).as_posix()] for p in train], dtype=torch.float32)
        scale = (self.scale_min, 1.0)
        self._train = AttributesDataset(train, train_transform(self.image_size, scale, resize_to=self.resize_to), rows)
        self._val = ColorImageDataset(val, eval_transform(self.image_size, resize_to=self.resize_to))
        share = ", ".join(f"{name} {rate:.0%}" for name, rate in zip(self.selected_attrs, rows.mean(0).tolist()))
        log.info("data: %d training and %d validation photos from %s; attributes present: %s", len(train), len(val), root, share)

    def device_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """{"image": sRGB in [0, 1], "attributes": float (N, K) of 0/1}."""
        return {
            "image": color.uint8_to_float(batch["rgb"].to(device, non_blocking=True)),
            "attributes": batch["attributes"].to(device, non_blocking=True),
        }


def check_selected_attrs(selected: Sequence[str]) -> list[str]:
    """The attribute names as a list, or a ConfigError saying what is wrong with them."""
    if isinstance(selected, str) or selected is None:
        raise ConfigError(f"data.selected_attrs must be a list of attribute names, e.g. [Black_Hair,Male], got {selected!r}")
    names = [str(name) for name in selected]
    if not names:
        raise ConfigError("data.selected_attrs is empty: name the attributes to train on")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.selected_attrs has repeated names: {names}")
    return names


def read_attribute_file(path: Path, selected: Sequence[str]) -> dict[str, list[float]]:
    """{file name: [1.0 or 0.0 per selected attribute]} from a list_attr_celeba.txt-style file."""
    if not path.is_file():
        raise DataError(f"data.attr_file: attribute file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(f"{path}: expected a line with the number of images, then a line of attribute names")
    names = lines[1].split()
    missing = [name for name in selected if name not in names]
    if missing:
        raise ConfigError(f"data.selected_attrs: {', '.join(missing)} not in {path}, which has: {' '.join(names)}")
    columns = [names.index(name) + 1 for name in selected]
    table: dict[str, list[float]] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise DataError(f"{path}, line {number}: {len(fields) - 1} values for {len(names)} attributes")
        try:
            table[fields[0]] = [ATTRIBUTE_VALUES[fields[c]] for c in columns]
        except KeyError as exc:
            raise DataError(f"{path}, line {number}: attribute values must be 1 or -1, got {exc.args[0]!r}") from None
    if len(table) != int(lines[0]):
        log.warning("data: %s says %s images but lists %d", path, lines[0].strip(), len(table))
    return table
