"""The pix2pix U-Net generator (Isola et al., 2017).

Same layers, channel widths and quirks as `UnetGenerator` in the reference code
(junyanz/pytorch-CycleGAN-and-pix2pix), written as two lists (encoder levels, decoder
levels) instead of nested blocks, and accepting any input size.
"""

from __future__ import annotations

import torch
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets.layers import check_norm, check_upsample, crop_to, init_weights, norm_layer, pad_to_multiple, upsample_conv

MIN_AUTO_DOWNS = 3
MAX_AUTO_DOWNS = 8


def depth_for_size(image_size: int) -> int:
    """Number of downsamplings for `image_size`: floor(log2), clamped to [3, 8] (256 -> 8)."""
    if image_size < 1:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    return min(max(image_size.bit_length() - 1, MIN_AUTO_DOWNS), MAX_AUTO_DOWNS)


class UNetGenerator(nn.Module):
    """U-Net mapping L (in_channels) to ab (out_channels, tanh, in [-1, 1]).

    Level i (0 = outermost) halves the resolution with a 4x4 stride-2 conv to
    ngf * min(2**i, 8) channels; the decoder mirrors it with transposed convs and
    concatenates the encoder's features at each level. With `num_downs=None` the depth
    follows `image_size` (256 -> 8, 128 -> 7, 64 -> 6, as the reference's unet_256/128).
    `upsample` other than "transposed" (the paper's) resizes then convolves instead
    (layers.upsample_conv): no checkerboard on flat regions.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        ngf: int = 64,
        num_downs: int | None = None,
        image_size: int = 256,
        norm: str = "batch",
        use_dropout: bool = True,
        init_type: str = "normal",
        init_gain: float = 0.02,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        check_norm(norm)
        check_upsample(upsample)
        if num_downs is None:
            num_downs = depth_for_size(image_size)
        if num_downs < 1:
            raise ConfigError(f"num_downs must be >= 1, got {num_downs}")
        self.num_downs = num_downs
        self.stride = 2**num_downs

        # BatchNorm's shift makes a conv bias redundant. The reference turns biases on
        # only for instance norm; we also keep them for norm="none", where nothing else
        # could supply the shift (the reference drops them there too, by accident).
        use_bias = norm != "batch"
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        last = num_downs - 1

        self.down_act = nn.LeakyReLU(0.2)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(num_downs):
            outermost, innermost = i == 0, i == last
            conv_in = in_channels if outermost else widths[i - 1]
            # The innermost level has no norm: its maps are 1x1, where batch statistics of
            # a batch of one (and instance statistics) are degenerate.
            down: list[nn.Module] = [
                nn.Conv2d(conv_in, widths[i], 4, stride=2, padding=1, bias=use_bias)
            ]
            if not (outermost or innermost):
                down.append(norm_layer(norm, widths[i]))
            self.down.append(nn.Sequential(*down))

            # Every level but the innermost receives [skip, upsampled] concatenated.
            up_in = widths[i] if innermost else 2 * widths[i]
            up: list[nn.Module] = [nn.ReLU()]
            if outermost:
                # The output conv keeps its bias whatever the norm: nothing follows it
                # but the Tanh.
                up += [*upsample_conv(upsample, up_in, out_channels, bias=True), nn.Tanh()]
            else:
                up += [
                    *upsample_conv(upsample, up_in, widths[i - 1], bias=use_bias),
                    norm_layer(norm, widths[i - 1]),
                ]
                # Dropout is pix2pix's noise source (it has no z): only in the deep,
                # ngf*8 -> ngf*8 levels, never the innermost (3 of them at depth 8).
                if use_dropout and not innermost and i >= 4:
                    up.append(nn.Dropout(0.5))
            self.up.append(nn.Sequential(*up))

        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W), for any H, W."""
        x, size = pad_to_multiple(x, self.stride)
        skips: list[torch.Tensor] = []
        h = self.down[0](x)
        for block in self.down[1:]:
            h = self.down_act(h)
            # The skip is taken after the LeakyReLU: the reference's in-place LeakyReLU
            # overwrites the tensor it then concatenates, so this is what it really does.
            skips.append(h)
            h = block(h)
        h = self.up[-1](h)
        for i in range(self.num_downs - 2, -1, -1):
            h = self.up[i](torch.cat([skips[i], h], dim=1))
        return crop_to(h, size)
