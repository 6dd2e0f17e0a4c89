"""The CycleGAN ResNet generator (Zhu et al. 2017, appendix 7.2; after Johnson et al. 2016).

    c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-out, tanh

c7s1-k: 7x7 conv, stride 1, k filters, norm, ReLU; dk: 3x3 conv, stride 2; Rk: a
residual block of two 3x3 convs; uk: 3x3 fractional-strided (transposed) conv, stride
1/2. Reflection padding throughout "to reduce artifacts" (paper). 9 blocks for 256 px
training images, 6 for 128 px and below, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets.layers import check_norm, check_upsample, crop_to, init_weights, norm_layer, pad_to_multiple, upsample_conv

__all__ = ["ResnetBlock", "ResnetGenerator", "blocks_for_size"]

N_DOWNSAMPLING = 2


def blocks_for_size(image_size: int) -> int:
    """The paper's choice: 9 residual blocks for 256 px and larger, 6 below."""
    if image_size < 1:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    return 9 if image_size >= 256 else 6


class ResnetBlock(nn.Module):
    """x + conv-norm-ReLU-conv-norm(x), 3x3 convs with reflection padding."""

    def __init__(self, channels: int, norm: str, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=use_bias),
            norm_layer(norm, channels),
            nn.ReLU(),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=use_bias), norm_layer(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W) in [-1, 1], for any H, W.

    `n_blocks=None` picks the paper's depth from `image_size`. Instance norm and no
    dropout are the CycleGAN defaults (the reference's resnet_9blocks / resnet_6blocks).
    `upsample` as the U-Net's (layers.upsample_conv).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        ngf: int = 64,
        n_blocks: int | None = None,
        image_size: int = 256,
        norm: str = "instance",
        use_dropout: bool = False,
        init_type: str = "normal",
        init_gain: float = 0.02,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        check_norm(norm)
        check_upsample(upsample)
        if n_blocks is None:
            n_blocks = blocks_for_size(image_size)
        if n_blocks < 0:
            raise ConfigError(f"n_blocks must be >= 0, got {n_blocks}")
        self.n_blocks = n_blocks
        self.stride = 2**N_DOWNSAMPLING
        # BatchNorm's shift makes a conv bias redundant; instance norm here has no affine
        # shift, so the convs keep theirs (the reference does the same).
        use_bias = norm != "batch"

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=use_bias),
            norm_layer(norm, ngf),
            nn.ReLU(),
        ]
        width = ngf
        for _ in range(N_DOWNSAMPLING):
            layers += [
                nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(norm, width * 2),
                nn.ReLU(),
            ]
            width *= 2
        layers += [ResnetBlock(width, norm, use_dropout, use_bias) for _ in range(n_blocks)]
        for _ in range(N_DOWNSAMPLING):
            layers += [
                # transposed: kernel 3 with output_padding=1, so that each exactly doubles the size.
                *upsample_conv(upsample, width, width // 2, bias=use_bias, transposed_kernel=3),
                norm_layer(norm, width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sizes that are not multiples of 4 would lose rows in the stride-2 convs; the
        # innermost maps must also stay >= 2 px for the blocks' reflection padding.
        x, size = pad_to_multiple(x, self.stride, min_size=2 * self.stride)
        return crop_to(self.model(x), size)
