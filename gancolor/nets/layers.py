"""Building blocks shared by the generators and discriminators.

Follows the conventions of Isola et al. (2017) and their reference code
(junyanz/pytorch-CycleGAN-and-pix2pix): the same norm choices, the same weight
initialisation, so that results stay comparable with the published ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gancolor.errors import ConfigError

NORMS = ("batch", "instance", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d, exact on a uniform map: each map's first value is subtracted
    before normalising, which changes nothing in exact arithmetic (the norm is
    shift-invariant) but turns an exactly uniform map into exact zeros.

    Without it, the mean of n equal values is that value only up to rounding, and the
    rounding error (~1e-7) divided by sqrt(eps) (3e-3) becomes the layer's output; the
    next layers' norms amplify it again, so a ResNet generator's output on a uniform
    photo (a blank scan, a flat background) was set by summation order alone: PyTorch
    and onnxruntime disagreed by up to 180 8-bit levels. With exact zeros, every layer
    of such an input is exact, and any two runtimes agree. Same state dict as torch's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Running statistics would record the shifted maps' mean, not the maps'.
        assert not self.track_running_stats, "InstanceNorm2d here keeps no running statistics"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # detach: the norm's value does not depend on the shift, so neither may its gradient.
        return super().forward(x - x[..., :1, :1].detach())


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer of `kind` ("batch", "instance" or "none")."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "instance":
        # As in the reference: no learned scale/shift and no running statistics, so a
        # network behaves the same in train() and eval() (pix2pix/CycleGAN test with
        # instance statistics of the image at hand).
        return InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be batch, instance or none, got {kind!r}")


def check_norm(kind: str) -> str:
    """Return `kind` if it names a norm, else raise ConfigError (before any layer is built)."""
    if kind not in NORMS:
        raise ConfigError(f"norm must be batch, instance or none, got {kind!r}")
    return kind


UPSAMPLES = ("transposed", "nearest", "bilinear")


def check_upsample(kind: str) -> str:
    if kind not in UPSAMPLES:
        raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {kind!r}")
    return kind


def upsample_conv(kind: str, in_channels: int, out_channels: int, bias: bool, transposed_kernel: int = 4) -> list[nn.Module]:
    """Layers that double the size and map in_channels -> out_channels.

    "transposed" is the papers' fractionally-strided conv (kernel 4, or 3 with
    output_padding as CycleGAN's). Its kernel overlaps unevenly when the kernel size is not
    a multiple of the stride, which prints a checkerboard on flat regions (Odena et al.
    2016, "Deconvolution and Checkerboard Artifacts"); "nearest" / "bilinear" resize first,
    then a 3x3 conv, which cannot.
    """
    if kind == "transposed":
        padding, extra = (1, 0) if transposed_kernel == 4 else (transposed_kernel // 2, 1)
        return [nn.ConvTranspose2d(in_channels, out_channels, transposed_kernel, stride=2, padding=padding,
                                   output_padding=extra, bias=bias)]  # fmt: skip
    return [
        nn.Upsample(scale_factor=2, mode=check_upsample(kind), **({"align_corners": False} if kind == "bilinear" else {})),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
    ]


_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Initialise `net` in place as in the pix2pix reference and return it.

    Conv/linear weights: N(0, init_gain) ("normal"), Xavier-normal or orthogonal with gain
    `init_gain`, or Kaiming-normal (fan_in; the gain is unused there, as in the reference);
    their biases are 0. BatchNorm scales are N(1, init_gain) and shifts 0.
    """
    if init_type not in INIT_TYPES:
        raise ConfigError(f"init_type must be one of {', '.join(INIT_TYPES)}, got {init_type!r}")

    def init_module(m: nn.Module) -> None:
        if isinstance(m, _WEIGHTED) and getattr(m, "weight", None) is not None:
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, init_gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=init_gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=init_gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            # Scale near 1 rather than N(0, gain): a BatchNorm starting near 0 would
            # silence its layer.
            nn.init.normal_(m.weight, 1.0, init_gain)
            nn.init.zeros_(m.bias)

    with torch.no_grad():
        net.apply(init_module)
    return net


def _padded_length(n: int, multiple: int, min_size: int) -> int:
    target = max(n, min_size, 1)
    return -(-target // multiple) * multiple


def pad_to_multiple(
    x: torch.Tensor, multiple: int, min_size: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad NCHW `x` at the bottom/right so H and W are multiples of `multiple` and >= `min_size`.

    Returns the padded tensor and the original (H, W), for `crop_to`.

    Why: a net of k stride-2 convolutions only round-trips sizes that are multiples of
    2**k. The reference U-Net (8 downsamplings) therefore takes only multiples of 256:
    any other size is floored on the way down, and the decoder's upsampled maps no longer
    match the encoder's skip connections. Padding here and cropping after lets the nets
    take photos of any size.

    Reflect padding continues the image's texture, so the padded border looks like more
    photo rather than a flat band. PyTorch's reflect needs the pad to be smaller than the
    dimension, so tiny inputs (e.g. 17 px padded to 256) are mirrored in several rounds;
    only a 1-pixel dimension is replicated. (Replicate padding by more than the input
    size also trips a torch.compile bug in its backward pass.)
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if torch.jit.is_tracing():  # exporting (gancolor.export): sizes must stay symbolic
        return _traced_pad_to_multiple(x, multiple, min_size)
    h, w = x.shape[-2:]
    pad_h = _padded_length(h, multiple, min_size) - h
    pad_w = _padded_length(w, multiple, min_size) - w
    return mirror_pad(x, bottom=pad_h, right=pad_w), (h, w)


def mirror_pad(x: torch.Tensor, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0) -> torch.Tensor:
    """Reflect-pad NCHW `x` on each side by any amount, in rounds where a pad is not
    smaller than the dimension (PyTorch's limit); a 1-pixel dimension is replicated."""
    for side, pad in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        x = _mirror_pad(x, pad, side)
    return x


_PAD_SPEC = {"left": lambda n: (n, 0, 0, 0), "right": lambda n: (0, n, 0, 0),
             "top": lambda n: (0, 0, n, 0), "bottom": lambda n: (0, 0, 0, n)}


def _mirror_pad(x: torch.Tensor, pad: int, side: str) -> torch.Tensor:
    dim = -1 if side in ("left", "right") else -2
    while pad > 0:
        size = x.shape[dim]
        step = min(pad, size - 1) if size > 1 else pad
        x = F.pad(x, _PAD_SPEC[side](step), mode="reflect" if size > 1 else "replicate")
        pad -= step
    return x


def _traced_pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int) -> tuple[torch.Tensor, tuple]:
    """`pad_to_multiple` as one gather per axis, for a traced graph that takes any size.

    Under tracing, shapes are recorded as values but a Python loop or `max` on them is
    run once and frozen, so the rounds of `_mirror_pad` would fit only the example's
    size. Mirroring in rounds about the growing end is the periodic reflection of
    period 2(n - 1) (every end it mirrors about is a multiple of n - 1, a symmetry
    point of that extension), so one index map gives the same pixels for any size;
    n = 1 (period clamped to 1) gives the replication `_mirror_pad` does there.
    """
    h, w = x.shape[-2], x.shape[-1]  # 0-dim tensors while tracing, so the arithmetic is traced
    for dim, n in ((-2, h), (-1, w)):
        target = torch.clamp(n, min=max(min_size, 1))
        length = torch.div(target + multiple - 1, multiple, rounding_mode="floor") * multiple
        period = torch.clamp(2 * (n - 1), min=1)
        phase = torch.remainder(torch.arange(length, device=x.device), period)
        x = x.index_select(dim, torch.minimum(phase, period - phase))
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop NCHW `x` to `size` = (H, W) from the top-left: undoes `pad_to_multiple`."""
    h, w = size
    return x[..., :h, :w]
