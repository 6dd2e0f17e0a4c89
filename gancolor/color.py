"""Colour science in one place: sRGB <-> CIE Lab on batched tensors, and the
normalisation every net in gancolor sees.

Conventions (DESIGN.md): L in [-1, 1] as L/50 - 1, ab in [-1, 1] as ab/110, NCHW,
float32. The conversion itself is kornia's (D65 white point, sRGB companding), so it
runs on whatever device the batch is on; this module only adds the normalisation and
the uint8 <-> float plumbing so that no other module converts colour by hand.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab

L_SCALE = 50.0
AB_SCALE = 110.0


def rgb_to_lab_normalized(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB in [0, 1], (N, 3, H, W) -> (L, ab) normalised to [-1, 1].

    Computed in float32 whatever the input dtype: Lab's cube roots lose too much in
    bf16/fp16 for the round trip to stay under 1/255.
    """
    lab = rgb_to_lab(rgb.float().clamp(0.0, 1.0))
    L = lab[:, :1] / L_SCALE - 1.0
    ab = lab[:, 1:] / AB_SCALE
    return L, ab


def lab_normalized_to_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L, ab) in [-1, 1] -> sRGB in [0, 1]; out-of-gamut colours are clipped."""
    lab = torch.cat([(L.float() + 1.0) * L_SCALE, ab.float() * AB_SCALE], dim=1)
    return lab_to_rgb(lab, clip=True)


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] -> uint8, rounded (not truncated) so a round trip is exact."""
    return images.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def gray_to_rgb(L: torch.Tensor) -> torch.Tensor:
    """Normalised L -> the neutral sRGB image with that lightness (a = b = 0)."""
    return lab_normalized_to_rgb(L, torch.zeros_like(L).expand(-1, 2, -1, -1))


def rgb_to_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> normalised L only, for grayscale inputs given as RGB."""
    return rgb_to_lab_normalized(rgb)[0]


def batch_to_lab(images: torch.Tensor, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated uint8 batch (N, 3, H, W) -> normalised (L, ab) on `device`.

    The copy happens while the batch is still uint8 (4x fewer bytes than float) and
    is non-blocking from pinned memory; the conversion then runs on the device.
    """
    if device is not None:
        images = images.to(device, non_blocking=True)
    return rgb_to_lab_normalized(uint8_to_float(images))
