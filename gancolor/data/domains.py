"""StarGAN's labelled image domains (data=domains): one generator translates between all of them.

Two sources (`data.source`):

    transforms   colour photos (data.root, or null: the bundled sample photos), each
                 shown in a domain made from it by a named colour transform of
                 gancolor.color: color (as is), gray, sepia, warm, cool. Each training
                 batch is spread evenly over the domains, and which photo lands in which
                 domain changes from batch to batch.
    folders      real labelled domains: root/<domain>/ for every name in data.domains
                 (or root/train/<domain> with root/val/<domain> or root/test/<domain>).
                 Day/night and other looks that no pixel-wise transform makes belong here.

`data.domains` fixes the label order (label i = domains[i]), which the checkpoint keeps
with the config. `data.color_domain` names the domain of colour photos: validation
colourises held-out photos of it, and the StarGAN recipe translates into it.

`device_batch` gives the recipe {"image": sRGB float in [0, 1], "domain": labels (N,)}
on the device; validation batches are colour photos ("rgb"), as for every data set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gancolor import color
from gancolor.data.datamodule import FolderDataModule, SampleRootFallback, defaults_for, readable_images, seeded_split

# DomainImageDataset was defined here before every torch Dataset moved to datasets.py;
# it stays importable from here.
from gancolor.data.datasets import ColorImageDataset, DomainImageDataset
from gancolor.data.images import find_images
from gancolor.data.transforms import eval_transform, train_transform
from gancolor.errors import ConfigError, DataError

log = logging.getLogger("gancolor.data")

SOURCES = ("transforms", "folders")


class DomainsDataModule(SampleRootFallback, FolderDataModule):
    """StarGAN's labelled domains; see the module docstring.

    `val_fraction` and `repeats` default (null) to 0.25 and 6 on the sample photos,
    0.1 and 1 on a folder. In `folders` mode the split applies to the colour domain
    only: the other domains are all used for training.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        domains: Sequence[str] = ("gray", "color", "sepia"),
        source: str = "transforms",
        color_domain: str = "color",
        image_size: int = 128,
        batch_size: int = 16,
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
        self.domains = check_domains(domains, source, color_domain)
        self.source = source
        self.color_domain = color_domain
        self.cache_dir = cache_dir
        if source == "folders" and root is None:
            raise ConfigError("data.root: data.source=folders needs a folder with one subfolder per domain")

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    def setup(self) -> None:
        if self._train is not None:
            return
        root = self._resolved_root()
        scale = (self.scale_min, 1.0)
        if self.source == "transforms":
            train, val = self._split(root)
            self._train = DomainImageDataset(train, train_transform(self.image_size, scale, resize_to=self.resize_to))
            log.info(
                "data: %d training photos shown as %s, %d validation photos, from %s",
                len(train), ", ".join(self.domains), len(val), root,
            )
        else:
            paths, labels, val = self._labelled(root)
            self._train = DomainImageDataset(paths, train_transform(self.image_size, scale, resize_to=self.resize_to), labels)
            counts = ", ".join(f"{name} {labels.count(i)}" for i, name in enumerate(self.domains))
            log.info(
                "data: training images per domain: %s; %d validation photos of %s, from %s",
                counts, len(val), self.color_domain, root,
            )
        self._val = ColorImageDataset(val, eval_transform(self.image_size, resize_to=self.resize_to))

    def device_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """{"image": sRGB in [0, 1] shown in its domain, "domain": long labels (N,)}."""
        rgb = color.uint8_to_float(batch["rgb"].to(device, non_blocking=True))
        if self.source == "folders":
            return {"image": rgb, "domain": batch["domain"].to(device, non_blocking=True)}
        # Labels round-robin over the batch from an offset that the (shuffled) first index
        # picks: every domain appears whenever the batch is at least as large as the
        # domain list, and a photo's domain changes between epochs. No RNG state of its
        # own: the loader's seed fixes it.
        n = len(rgb)
        labels = (torch.arange(n) + int(batch["index"][0])) % self.n_domains
        labels = labels.to(device, non_blocking=True)
        image = rgb
        for k, name in enumerate(self.domains):
            if name != "color":
                image = torch.where((labels == k).view(n, 1, 1, 1), color.apply_color_transform(name, rgb), image)
        return {"image": image, "domain": labels}

    # -- internals ----------------------------------------------------------------
    def _labelled(self, root: Path) -> tuple[list[Path], list[int], list[Path]]:
        presplit = self._presplit_dirs_for_domains(root)
        train_root, val_root = presplit if presplit else (root, None)
        missing = [d for d in self.domains if not (train_root / d).is_dir()]
        if missing:
            raise DataError(
                f"data.root: data.source=folders needs a subfolder per domain; "
                f"missing under {train_root}: {', '.join(missing)}"
            )
        paths: list[Path] = []
        labels: list[int] = []
        val: list[Path] = []
        for label, name in enumerate(self.domains):
            folder = train_root / name
            found = self._cap(find_images(folder))
            if not found:
                raise DataError(f"data.root: no images under {folder}")
            if name == self.color_domain:
                # Colour photos must be colour: they are also validation's ground truth.
                found = self._scan(found, folder).good
                if val_root is None:
                    found, val = seeded_split(found, self.val_fraction, self.seed)
            else:
                found = readable_images(found, folder)
            paths += found
            labels += [label] * len(found)
        if val_root is not None:
            folder = val_root / self.color_domain
            candidates = self._cap(find_images(folder)) if folder.is_dir() else []
            val = self._scan(candidates, folder).good if candidates else []
        if not val:
            log.warning("data: no colour validation photos of %s under %s; validation is skipped", self.color_domain, root)
        return paths, labels, val

    def _presplit_dirs_for_domains(self, root: Path) -> tuple[Path, Path | None] | None:
        if "train" in self.domains or not (root / "train").is_dir():
            return None
        for name in ("val", "test"):
            if (root / name).is_dir():
                return root / "train", root / name
        return root / "train", None


def check_domains(domains: Sequence[str], source: str, color_domain: str) -> list[str]:
    """The domain names as a list, or a ConfigError saying what is wrong with them."""
    if source not in SOURCES:
        raise ConfigError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if isinstance(domains, str):
        raise ConfigError(f"data.domains must be a list of names, e.g. [gray,color,sepia], got {domains!r}")
    names = [str(d) for d in domains]
    if len(names) < 2:
        raise ConfigError(f"data.domains needs at least 2 domains, got {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.domains has repeated names: {names}")
    if color_domain not in names:
        raise ConfigError(f"data.color_domain {color_domain!r} is not one of data.domains {names}")
    if source == "transforms":
        for name in names:
            color.check_color_transform(name, "each of data.domains (with data.source=transforms)")
        if color_domain != "color":
            raise ConfigError(
                f"data.color_domain must be 'color' with data.source=transforms (the photos as they are), got {color_domain!r}"
            )
    return names


# Checkpoints and run configs store the `_target_` they were trained with:
# gancolor.data.domains.DomainsData (and gancolor.data.DomainsData) must keep resolving.
DomainsData = DomainsDataModule
