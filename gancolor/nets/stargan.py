"""StarGAN's networks (Choi et al. 2018, appendix, table 4; yunjey/stargan model.py).

Generator: the target-domain code is tiled over the image and concatenated to it as
extra input channels; then c7s1-64, two stride-2 4x4 downsamplings, residual blocks,
two 4x4 transposed-conv upsamplings and a 7x7 conv to the image channels, tanh.
Instance norm with a learned scale and shift, zero padding, no biases before a norm.

Discriminator (PatchGAN): 4x4 stride-2 convs with LeakyReLU(0.01) and no norm, then
two heads on the same features: D_src, a 3x3 conv giving a real/fake score per patch,
and D_cls, a conv spanning the whole final map giving one logit per domain.

Both take any input size. Departures from yunjey/stargan, on purpose: instance norm
keeps no running statistics (the reference's track_running_stats=True makes eval()
outputs differ from train() ones); the classification head average-pools the final
map to its trained size first, so it is unchanged at the training size and still
works at any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets.layers import InstanceNorm2d, crop_to, pad_to_multiple

__all__ = ["StarGANDiscriminator", "StarGANGenerator", "domain_code"]


def domain_code(c: torch.Tensor, n_domains: int) -> torch.Tensor:
    """Domain labels (N,) or codes (N, n_domains) -> float codes (N, n_domains)."""
    if c.dim() == 1:
        return F.one_hot(c.long(), n_domains).float()
    if c.dim() != 2 or c.shape[1] != n_domains:
        raise ValueError(f"domain code must be (N,) labels or (N, {n_domains}), got {tuple(c.shape)}")
    return c.float()


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return InstanceNorm2d(channels, affine=True, track_running_stats=False)  # exact on uniform maps (layers.py)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class StarGANGenerator(nn.Module):
    """G(x, c): (N, in_channels, H, W) and target domains (N,) -> (N, out_channels, H, W)."""

    def __init__(
        self,
        n_domains: int,
        in_channels: int = 3,
        out_channels: int = 3,
        conv_dim: int = 64,
        repeat_num: int = 6,
    ) -> None:
        super().__init__()
        if n_domains < 2:
            raise ConfigError(f"StarGAN needs at least 2 domains, got {n_domains}")
        if repeat_num < 0:
            raise ConfigError(f"generator.repeat_num must be >= 0, got {repeat_num}")
        self.n_domains = n_domains
        self.stride = 4  # two stride-2 downsamplings; other sizes are padded
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels + n_domains, conv_dim, 7, padding=3, bias=False),
            _instance_norm(conv_dim),
            nn.ReLU(),
        ]
        width = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1, bias=False), _instance_norm(width * 2), nn.ReLU()]
            width *= 2
        layers += [_ResidualBlock(width) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                _instance_norm(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.Conv2d(width, out_channels, 7, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        code = domain_code(c, self.n_domains).to(x.dtype)
        tiled = code[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return crop_to(self.main(torch.cat([x, tiled], dim=1)), size)


def layers_for_size(image_size: int) -> int:
    """Stride-2 layers leaving a final map of at least 2x2 at `image_size`, at most 6
    (the reference's 128 px -> 6 layers -> 2x2)."""
    if image_size < 4:
        raise ConfigError(f"image_size must be >= 4 for the StarGAN discriminator, got {image_size}")
    return min(6, image_size.bit_length() - 2)


class StarGANDiscriminator(nn.Module):
    """D(x) -> (D_src: (N, 1, H', W') raw scores, D_cls: (N, n_domains) logits)."""

    def __init__(
        self,
        n_domains: int,
        in_channels: int = 3,
        image_size: int = 128,
        conv_dim: int = 64,
        repeat_num: int | None = None,
    ) -> None:
        super().__init__()
        if n_domains < 2:
            raise ConfigError(f"StarGAN needs at least 2 domains, got {n_domains}")
        if repeat_num is None:
            repeat_num = layers_for_size(int(image_size))
        if repeat_num < 1:
            raise ConfigError(f"discriminator.repeat_num must be >= 1, got {repeat_num}")
        self.stride = 2**repeat_num
        layers: list[nn.Module] = [nn.Conv2d(in_channels, conv_dim, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        width = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            width *= 2
        self.main = nn.Sequential(*layers)
        self.cls_size = max(1, int(image_size) // self.stride)
        self.conv_src = nn.Conv2d(width, 1, 3, padding=1, bias=False)
        self.conv_cls = nn.Conv2d(width, n_domains, self.cls_size, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = pad_to_multiple(x, self.stride)
        h = self.main(x)
        out_src = self.conv_src(h)
        out_cls = self.conv_cls(F.adaptive_avg_pool2d(h, self.cls_size))
        return out_src, out_cls.flatten(1)
