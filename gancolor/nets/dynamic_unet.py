"""A U-Net whose encoder is a pretrainable timm CNN: fastai's "Dynamic U-Net", the
generator of DeOldify (Antic 2019). With a ResNet18 encoder (He et al. 2016) and ImageNet
weights, MSE pretraining of G, then the GAN, it is the NoGAN-style baseline of DeOldify.

"Dynamic" because the decoder is built from whatever the encoder reports: timm's
`features_only=True` gives the feature maps at each reduction (resnet18: 64, 64, 128,
256, 512 channels at 1/2 ... 1/32), and the decoder gets one level per map: upsample
x2 by PixelShuffle (its conv ICNR-initialised, then a blur, against checkerboard
artefacts), concatenate the encoder's map of that size, two 3x3 convs. At full size it
concatenates the input L again and ends in a residual block and a 1x1 conv to
`out_channels`: 2 (ab, tanh like the pix2pix U-Net) or Q class logits (raw) for CIC.

The encoder was trained on ImageNet RGB, so L enters through a stem that makes it the
ImageNet-normalised gray image the encoder expects (learnable 1x1 conv, or a fixed
repeat). The submodule is called `encoder` so that `trainer.freeze_epochs=
{generator.encoder: K}` can hold it for the first K epochs; `param_groups(lr)` gives it
its own, lower learning rate (`encoder.lr_mult`) once it trains.

Any input size: the input is padded to a multiple of the encoder's total reduction
(32) and the output cropped back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gancolor.errors import ConfigError
from gancolor.nets.layers import crop_to, pad_to_multiple
from gancolor.nets.weights import cached_pretrained_file, load_encoder_weights

log = logging.getLogger("gancolor.nets")

ENCODER_KEYS = ("name", "weights", "lr_mult")
INPUT_STEMS = ("conv", "repeat")
OUTPUTS = ("auto", "tanh", "logits")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Encoders already warned about in this process: the warning is for people, once.
_warned_no_weights: set[str] = set()


def _no_pretrained_weights(name: str) -> None:
    if name not in _warned_no_weights:
        _warned_no_weights.add(name)
        log.warning(
            "no pretrained weights for %s: training the encoder from scratch (set generator.encoder.weights=PATH)", name
        )


def icnr_(weight: torch.Tensor, scale: int = 2, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"):
    initialise the conv before a PixelShuffle(scale) so that the scale**2 outputs
    feeding each upsampled pixel block start equal, which makes the sub-pixel conv start
    as nearest-neighbour upsampling of a normally initialised conv: no checkerboard."""
    out_channels = weight.shape[0]
    if out_channels % (scale**2):
        raise ValueError(f"{out_channels} output channels do not split into {scale}x{scale} sub-pixels")
    base = torch.empty(out_channels // scale**2, *weight.shape[1:])
    init(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(scale**2, dim=0))
    return weight


class ConvBlock(nn.Sequential):
    """conv -> (BatchNorm) -> ReLU; with spectral norm, the conv is normalised instead
    (as in SAGAN / DeOldify, whose spectrally normalised layers carry no BatchNorm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, spectral: bool = False, relu: bool = True):
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=spectral)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        layers: list[nn.Module] = [_spectral_norm(conv) if spectral else conv]
        if not spectral:
            layers.append(nn.BatchNorm2d(out_channels))
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class PixelShuffleUp(nn.Module):
    """x2 upsampling: 1x1 conv to 4x the channels (ICNR), ReLU, PixelShuffle, blur.

    The blur (replication pad + 2x2 average, stride 1) is Sugawara et al.'s fix for the
    remaining checkerboard of sub-pixel convolution once training moves off ICNR."""

    def __init__(self, in_channels: int, out_channels: int, blur: bool = True, spectral: bool = False):
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels * 4, 1)
        icnr_(conv.weight)
        nn.init.zeros_(conv.bias)
        self.conv = _spectral_norm(conv) if spectral else conv
        self.shuffle = nn.PixelShuffle(2)
        self.blur = blur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(F.relu(self.conv(x)))
        if self.blur:
            x = F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)
        return x


class SelfAttention(nn.Module):
    """SAGAN's self-attention (Zhang et al. 2019): each position mixes in features from
    everywhere, weighted by similarity; gamma starts at 0 so it begins as identity."""

    def __init__(self, channels: int, spectral: bool = False):
        super().__init__()
        inner = max(1, channels // 8)
        wrap = _spectral_norm if spectral else (lambda m: m)
        self.query = wrap(nn.Conv2d(channels, inner, 1, bias=False))
        self.key = wrap(nn.Conv2d(channels, inner, 1, bias=False))
        self.value = wrap(nn.Conv2d(channels, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        k = self.key(x).flatten(2)  # (N, C', HW)
        v = self.value(x).flatten(2)  # (N, C, HW)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)  # (N, HW, HW)
        out = torch.bmm(v, attention.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


class UpLevel(nn.Module):
    """One decoder level: upsample x2, concatenate the encoder's map of that size
    (through a BatchNorm: encoder maps and decoder maps have very different scales),
    ReLU, two 3x3 conv blocks, optionally self-attention."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, blur: bool, spectral: bool, attention: bool
    ):
        super().__init__()
        up_channels = max(1, in_channels // 2)
        self.up = PixelShuffleUp(in_channels, up_channels, blur, spectral)
        self.skip_norm = nn.BatchNorm2d(skip_channels)
        self.convs = nn.Sequential(
            ConvBlock(up_channels + skip_channels, out_channels, spectral=spectral),
            ConvBlock(out_channels, out_channels, spectral=spectral),
        )
        self.attention = SelfAttention(out_channels, spectral) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.attention(self.convs(F.relu(torch.cat([x, self.skip_norm(skip)], dim=1))))


class DynamicUNet(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W), any H and W.

    encoder: {name: timm model name (resnet18, resnet34, resnet50, convnext_tiny, ...),
              weights: PATH (safetensors or torch state dict) | null (timm's local cache
              if it holds them, else a warning and random weights) | false (random
              weights, no warning), lr_mult: encoder LR / generator LR once unfrozen}.
    """

    def __init__(
        self,
        encoder: Mapping | None = None,
        in_channels: int = 1,
        out_channels: int = 2,
        image_size: int = 256,
        self_attention: bool = False,
        spectral_norm: bool = False,
        blur: bool = True,
        decoder_width_mult: float = 1.0,
        input_stem: str = "conv",
        output: str = "auto",
    ) -> None:
        super().__init__()
        encoder = dict(encoder or {})
        unknown = sorted(set(encoder) - set(ENCODER_KEYS))
        if unknown:
            raise ConfigError(f"generator.encoder: unknown key(s) {', '.join(unknown)}; expected {', '.join(ENCODER_KEYS)}")
        self.encoder_name = str(encoder.get("name") or "resnet18")
        self.lr_mult = float(encoder.get("lr_mult", 0.1))
        if self.lr_mult < 0:
            raise ConfigError(f"generator.encoder.lr_mult must be >= 0, got {self.lr_mult}")
        if input_stem not in INPUT_STEMS:
            raise ConfigError(f"generator.input_stem must be one of {', '.join(INPUT_STEMS)}, got {input_stem!r}")
        if output not in OUTPUTS:
            raise ConfigError(f"generator.output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if decoder_width_mult <= 0:
            raise ConfigError(f"generator.decoder_width_mult must be > 0, got {decoder_width_mult}")
        if in_channels < 1 or out_channels < 1 or image_size < 1:
            raise ConfigError("generator: in_channels, out_channels and image_size must be positive")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, int(image_size)
        # 2 channels are ab (bounded like the pix2pix U-Net's); more are class logits.
        self.tanh = output == "tanh" or (output == "auto" and out_channels == 2)

        self.encoder = self._build_encoder(self.encoder_name)
        self.encoder_source = self._load_weights(encoder.get("weights"))
        channels = list(self.encoder.feature_info.channels())
        reductions = list(self.encoder.feature_info.reduction())
        self.stride = max(reductions)

        # L in [-1, 1] -> gray in [0, 1] -> ImageNet-normalised per channel, as one affine
        # map: what the pretrained first conv expects. A 1x1 conv starts as exactly that
        # and may learn better; "repeat" keeps it fixed.
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        weight = (0.5 / std).view(3, 1, 1, 1).expand(3, in_channels, 1, 1) / in_channels
        bias = ((0.5 - mean) / std).flatten()
        if input_stem == "conv":
            self.stem = nn.Conv2d(in_channels, 3, 1)
            with torch.no_grad():
                self.stem.weight.copy_(weight)
                self.stem.bias.copy_(bias)
        else:
            self.stem = None
            self.register_buffer("stem_weight", weight.clone(), persistent=False)
            self.register_buffer("stem_bias", bias.clone(), persistent=False)

        width = lambda c: max(8, int(round(c * decoder_width_mult)))  # noqa: E731
        bottom = channels[-1]
        self.middle = nn.Sequential(
            nn.BatchNorm2d(bottom),
            nn.ReLU(),
            ConvBlock(bottom, width(2 * bottom), spectral=spectral_norm),
            ConvBlock(width(2 * bottom), width(bottom), spectral=spectral_norm),
        )
        x_channels = width(bottom)
        # Self-attention where the maps are 1/8 of the input: global context at a size
        # where the HW x HW attention matrix stays affordable (DeOldify's placement).
        attention_level = min(range(len(reductions) - 1), key=lambda i: abs(reductions[i] - 8))
        self.up = nn.ModuleList()
        for i in range(len(channels) - 2, -1, -1):
            up_channels = max(1, x_channels // 2)
            out = width(up_channels + channels[i])
            self.up.append(
                UpLevel(x_channels, channels[i], out, blur, spectral_norm, self_attention and i == attention_level)
            )
            x_channels = out
        # The encoder's finest map is at 1/2 (ResNet) or 1/4 (ConvNeXt): upsample the rest
        # of the way, halving the channels each time.
        self.final_up = nn.ModuleList()
        reduction = reductions[0]
        while reduction > 1:
            self.final_up.append(PixelShuffleUp(x_channels, max(8, x_channels // 2), blur, spectral_norm))
            x_channels, reduction = max(8, x_channels // 2), reduction // 2
        # Full size: see the input again (fine detail the encoder blurred), then a
        # residual block and a 1x1 projection to the outputs.
        merged = x_channels + in_channels
        self.final_res = nn.Sequential(
            ConvBlock(merged, merged, spectral=spectral_norm),
            ConvBlock(merged, merged, spectral=spectral_norm, relu=False),
        )
        self.head = nn.Conv2d(merged, out_channels, 1)
        # A small head: the first outputs are near 0 (gray ab, near-uniform class
        # probabilities) instead of saturating the tanh or the softmax.
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    # -- building -----------------------------------------------------------------------
    @staticmethod
    def _build_encoder(name: str) -> nn.Module:
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"generator.encoder.name: unknown timm model {name!r} (see timm.list_models())")
        try:
            # pretrained=False always: gancolor never downloads; weights come from files.
            return timm.create_model(name, pretrained=False, features_only=True)
        except Exception as exc:
            raise ConfigError(f"generator.encoder.name: timm cannot build {name!r} as a feature encoder: {exc}") from None

    def _load_weights(self, weights) -> str:
        """Put pretrained weights into the encoder; say where they came from."""
        if weights is False or (isinstance(weights, str) and weights.strip().lower() in ("false", "none", "scratch")):
            return "random (requested)"
        if weights is None:
            cached = cached_pretrained_file(self.encoder_name)
            if cached is None:
                _no_pretrained_weights(self.encoder_name)
                return "random"
            load_encoder_weights(self.encoder, cached, where=f"timm cache for {self.encoder_name}")
            log.info("encoder %s: ImageNet weights from timm's local cache %s", self.encoder_name, cached)
            return str(cached)
        load_encoder_weights(self.encoder, weights)
        log.info("encoder %s: weights from %s", self.encoder_name, weights)
        return str(weights)

    def param_groups(self, lr: float) -> list[dict]:
        """The decoder (and stem) at `lr`, the encoder at lr * encoder.lr_mult.

        The decoder's group comes first because the trainer logs an optimiser's first
        group as its learning rate (lr/G)."""
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        rest = [p for p in self.parameters() if id(p) not in encoder_ids]
        return [
            {"params": rest, "lr": lr},
            {"params": list(self.encoder.parameters()), "lr": lr * self.lr_mult},
        ]

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # At least 2x2 at the bottom: BatchNorm needs more than one value per channel.
        x, size = pad_to_multiple(x, self.stride, min_size=2 * self.stride)
        if self.stem is not None:
            rgb = self.stem(x)
        else:
            rgb = F.conv2d(x, self.stem_weight.to(x.dtype), self.stem_bias.to(x.dtype))
        features = self.encoder(rgb)
        h = self.middle(features[-1])
        for level, skip in zip(self.up, reversed(features[:-1])):
            h = level(h, skip)
        for up in self.final_up:
            h = up(h)
        h = torch.cat([h, x.to(h.dtype)], dim=1)
        h = F.relu(h + self.final_res(h))
        out = self.head(h)
        if self.tanh:
            out = torch.tanh(out)
        return crop_to(out, size)
