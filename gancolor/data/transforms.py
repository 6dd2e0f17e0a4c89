"""Augmentation pipelines on uint8 HWC RGB arrays (albumentations 2.x).

They run inside DataLoader workers, before collation, so they only see uint8 RGB;
Lab conversion happens later on the device (gancolor.color). With `paired=True` the
pipeline also accepts `input_rgb=...`, an aligned second image that receives exactly
the same crop and flip (pix2pix's A|B pairs).

Albumentations 2.x draws from a random state owned by each Compose, not from numpy's
or Python's global one: reproducibility comes from `Compose.set_random_seed`, which the
datasets' `reseed` calls from the DataLoader's worker_init_fn.
"""

from __future__ import annotations

import os

# albumentations asks PyPI for a newer version on import (a network call with a 2 s
# timeout); training machines are often offline and should not phone home.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402

PAIRED_TARGET = "input_rgb"


def train_transform(
    image_size: int, scale: tuple[float, float] = (0.5, 1.0), paired: bool = False, resize_to: int | None = None
) -> A.Compose:
    """Random crop covering `scale` of the area, resized to a square, plus a random flip.

    With `resize_to`, Zhang et al.'s recipe instead: the whole image resized to a
    resize_to square, then a random image_size crop of it (176 px crops of 256 px images).
    """
    if resize_to is not None:
        return _compose(
            [
                A.Resize(resize_to, resize_to, area_for_downscale="image"),
                A.RandomCrop(image_size, image_size),
                A.HorizontalFlip(p=0.5),
            ],
            paired,
        )
    return _compose(
        [
            # INTER_AREA when shrinking: photos are usually much larger than the
            # training size and bilinear downscaling would alias fine texture.
            A.RandomResizedCrop(size=(image_size, image_size), scale=tuple(scale), area_for_downscale="image"),
            A.HorizontalFlip(p=0.5),
        ],
        paired,
    )


def eval_transform(image_size: int, paired: bool = False, resize_to: int | None = None) -> A.Compose:
    """Deterministic: short side to `image_size` (or the image to a `resize_to` square),
    then the central image_size square."""
    if resize_to is not None:
        return _compose([A.Resize(resize_to, resize_to, area_for_downscale="image"), A.CenterCrop(image_size, image_size)], paired)
    return _compose(
        [
            A.SmallestMaxSize(max_size=image_size, area_for_downscale="image"),
            A.CenterCrop(height=image_size, width=image_size),
        ],
        paired,
    )


def _compose(transforms: list[A.BasicTransform], paired: bool) -> A.Compose:
    targets = {PAIRED_TARGET: "image"} if paired else None
    return A.Compose(transforms, additional_targets=targets)
