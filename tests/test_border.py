"""Colourised photos have no pale bands along their borders (issue 13).

A net's outermost output pixels get less colour than the others (zero padding, and a
U-Net's last transposed convolution gives them half its taps); colorize used to show
them, upsampled to the photo's full size, as pale bands. The test photos are made of
horizontal bands (each row of a real photo, its mean colour repeated across the
width, like a horizon): every column holds the same content, so a translation-equivariant
net would give every column the same colour, and what differs at the left and right
borders is the border itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor import color
from gancolor.build import build_recipe
from gancolor.inference import Colorizer
from helpers import TINY_PIX2PIX, compose

pytestmark = pytest.mark.usefixtures("one_thread")

RENDER = 32  # the tiny net's training size; its U-Net's stride is 32 too


def briefly_trained_pix2pix(photos: list[np.ndarray]):
    """A small pix2pix generator fitted for a few dozen steps to 32 px crops of real
    photos (L1 to their colours), so that it predicts real colour from gray."""
    torch.manual_seed(0)
    recipe = build_recipe(compose(*TINY_PIX2PIX, "generator.ngf=4"))
    G = recipe.generator.train()
    optimizer = torch.optim.Adam(G.parameters(), lr=3e-3, betas=(0.5, 0.999))
    labs = [color.rgb_to_lab_normalized(color.uint8_to_float(torch.from_numpy(_shrunk(p, 8).copy()).permute(2, 0, 1)[None]))
            for p in photos]
    rng = np.random.default_rng(0)
    for _ in range(30):
        L, ab = [], []
        for i in range(8):
            l, a = labs[i % len(labs)]
            y, x = rng.integers(0, l.shape[2] - RENDER + 1), rng.integers(0, l.shape[3] - RENDER + 1)
            L.append(l[..., y : y + RENDER, x : x + RENDER])
            ab.append(a[..., y : y + RENDER, x : x + RENDER])
        loss = (G(torch.cat(L)) - torch.cat(ab)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return recipe.eval()


def _shrunk(photo: np.ndarray, factor: int) -> np.ndarray:
    h, w = photo.shape[:2]
    return np.asarray(Image.fromarray(photo).resize((w // factor, h // factor), Image.Resampling.BOX))


def horizon(photo: np.ndarray, width: int) -> np.ndarray:
    """Each row of `photo` replaced by its mean colour, `width` px wide."""
    rows = photo.mean(axis=1, keepdims=True).round().astype(np.uint8)
    return np.ascontiguousarray(np.repeat(rows, width, axis=1))


def column_colour(rgb: np.ndarray) -> torch.Tensor:
    """Mean |ab| of each column of an (H, W, 3) uint8 image."""
    _, ab = color.rgb_to_lab_normalized(color.uint8_to_float(torch.from_numpy(rgb).permute(2, 0, 1)[None]))
    return ab.abs().mean(dim=1)[0].mean(dim=0)


def test_the_border_columns_are_as_colourful_as_the_inner_ones(photos):
    recipe = briefly_trained_pix2pix(photos)
    colorizer = Colorizer(recipe, render_size=RENDER)
    outer, inner = [], []
    for photo in photos:
        small = _shrunk(photo, 4)
        image = horizon(small, width=int(small.shape[0] * 1.45))  # the net sees 32 x ~46: not a multiple of 32
        assert round(image.shape[1] * RENDER / image.shape[0]) % colorizer.stride
        profile = column_colour(colorizer(image))
        w = len(profile)
        k = max(1, w // (2 * RENDER))  # half a pixel of the net's output, at full size
        inner.append(profile[w // 4 : 3 * w // 4].mean())
        outer.append(torch.stack([profile[:k].mean(), profile[-k:].mean()]))
    inner_mean = torch.stack(inner).mean()
    assert inner_mean > 0.02  # the net does colour: about 2 ab units at least
    left, right = (torch.stack(outer).mean(dim=0) / inner_mean).tolist()
    # Before the fix: the left border had about half the colour of the inside (0.53).
    assert left == pytest.approx(1.0, abs=0.2) and right == pytest.approx(1.0, abs=0.2), (left, right)
