"""The colourisation net of Zhang et al. 2016 ("Colorful Image Colorization", fig. 2).

A VGG-like stack of 8 conv blocks, each two or three 3x3 conv + ReLU layers ending in
a BatchNorm, with no pooling and no fully connected layer: resolution drops only by
stride-2 convs (blocks 1-3, to 1/8), blocks 5 and 6 are dilated (atrous, dilation 2)
to widen the receptive field without losing resolution, and block 8 upsamples back to
1/4 with a 4x4 transposed conv. A 1x1 conv then gives Q class logits per pixel at 1/4
of the input size, which are upsampled bilinearly to the input size (the paper decodes
at 1/4 and upsamples the ab; upsampling the logits instead keeps the output the same
size as the input for every generator gancolor has).

Widths are the paper's (64, 128, 256, 512, 512, 512, 512, 256) times `width_mult`, so
tests and CPU runs can use a small copy. Any input size: padded to a multiple of 8.

Seed 000 reports ports of the Caffe weights that output gray images because Caffe's
BatchNorm (separate Scale layer, its own moving-average factor) differs from
PyTorch's. This net is trained with PyTorch's BatchNorm from the start, so no such
conversion happens here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets.layers import crop_to, pad_to_multiple

# (width, layers, stride of the last layer, dilation, BatchNorm at the end) per block.
BLOCKS = (
    (64, 2, 2, 1, True),
    (128, 2, 2, 1, True),
    (256, 3, 2, 1, True),
    (512, 3, 1, 1, True),
    (512, 3, 1, 2, True),
    (512, 3, 1, 2, True),
    (512, 3, 1, 1, True),
)
BLOCK8_WIDTH = 256  # block 8: 4x4 transposed conv (x2) then two 3x3 convs, no BatchNorm


class CICNet(nn.Module):
    """(N, in_channels, H, W) L -> (N, out_channels, H, W) raw class logits, any H, W."""

    def __init__(self, in_channels: int = 1, out_channels: int = 313, width_mult: float = 1.0, image_size: int = 256) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"generator.width_mult must be > 0, got {width_mult}")
        if in_channels < 1 or out_channels < 2:
            raise ConfigError(f"generator: need in_channels >= 1 and out_channels >= 2, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, int(image_size)
        width = lambda c: max(4, int(round(c * width_mult)))  # noqa: E731

        blocks: list[nn.Module] = []
        channels = in_channels
        for base, layers, stride, dilation, batch_norm in BLOCKS:
            out = width(base)
            block: list[nn.Module] = []
            for j in range(layers):
                last = j == layers - 1
                block += [
                    nn.Conv2d(channels, out, 3, stride=stride if last else 1, padding=dilation, dilation=dilation),
                    nn.ReLU(),
                ]
                channels = out
            if batch_norm:
                block.append(nn.BatchNorm2d(out))
            blocks.append(nn.Sequential(*block))
        out = width(BLOCK8_WIDTH)
        blocks.append(
            nn.Sequential(
                nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(out, out, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(out, out, 3, padding=1),
                nn.ReLU(),
            )
        )
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(out, out_channels, 1)
        self.stride = 8  # three stride-2 convs

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Near-uniform class probabilities at the start: a kaiming-scaled classifier
        # would begin with confident, arbitrary colours.
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        logits = self.classifier(self.blocks(x))  # 1/4 of the padded size
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return crop_to(logits, size)
