"""The PatchGAN discriminator (Isola et al., 2017): `NLayerDiscriminator` of the reference.

It classifies each overlapping patch of the (L, ab) image as real or fake; with
n_layers=3 each output logit sees a 70x70 patch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets.layers import check_norm, init_weights, norm_layer, pad_to_multiple

__all__ = ["PatchDiscriminator", "receptive_field"]


def receptive_field(layers: Iterable[tuple[int, int]]) -> int:
    """Receptive field of a stack of (kernel, stride) layers, first layer first.

    Walking back from one output pixel, a layer of kernel k and stride s turns a span of
    r positions into (r - 1) * s + k positions of its input.
    """
    r = 1
    for k, s in reversed(list(layers)):
        r = (r - 1) * s + k
    return r


class PatchDiscriminator(nn.Module):
    """PatchGAN: (N, in_channels, H, W) -> (N, 1, H', W') raw logits, for any H, W.

    No sigmoid: the GAN loss (BCE-with-logits, least squares, hinge) decides what a
    logit means.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        init_type: str = "normal",
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        check_norm(norm)
        if n_layers < 1:
            raise ConfigError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        self.stride = 2**n_layers
        # As in the reference, biases only where no BatchNorm follows to make them moot.
        use_bias = norm != "batch"

        # No norm on the first layer, as in DCGAN (Radford et al.), who found norm on the
        # discriminator's input layer made training oscillate.
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = ndf
        for n in range(1, n_layers + 1):
            # n_layers - 1 more stride-2 levels, then one stride-1 level; widths double
            # up to ndf * 8.
            stride = 2 if n < n_layers else 1
            next_width = ndf * min(2**n, 8)
            layers += [
                nn.Conv2d(width, next_width, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(norm, next_width),
                nn.LeakyReLU(0.2),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

        self.receptive_field: int = receptive_field(
            (m.kernel_size[0], m.stride[0]) for m in self.model if isinstance(m, nn.Conv2d)
        )
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits of `x`; inputs are padded first, so the map is never empty."""
        # Padding to at least the receptive field guarantees at least one whole patch
        # (a 16x16 input would otherwise shrink to nothing). Padding to a multiple of
        # 2**n_layers keeps the stride-2 convs from flooring away the bottom/right rows,
        # which no patch would then see.
        x, _ = pad_to_multiple(x, self.stride, min_size=self.receptive_field)
        return self.model(x)
