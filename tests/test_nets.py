"""Shapes, depth, dropout, init and receptive field of the pix2pix networks (CPU, small widths)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gancolor.errors import ConfigError
from gancolor.nets import PatchDiscriminator, ResnetGenerator, UNetGenerator, init_weights
from gancolor.nets.layers import crop_to, norm_layer, pad_to_multiple


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- U-Net -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(2, 1, 256, 256), (2, 1, 64, 64), (1, 1, 37, 53), (1, 1, 300, 200), (1, 1, 17, 17)],
)
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_keeps_size_for_any_input(shape: tuple[int, ...], norm: str) -> None:
    net = UNetGenerator(ngf=8, norm=norm)
    out = net(torch.rand(shape) * 2 - 1)
    assert out.shape == (shape[0], 2, shape[2], shape[3])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1


def test_unet_eval_mode_and_no_norm() -> None:
    net = UNetGenerator(ngf=8, norm="none", image_size=64).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 50, 70))
    assert out.shape == (1, 2, 50, 70)


@pytest.mark.parametrize("image_size,depth", [(256, 8), (128, 7), (64, 6), (300, 8), (1024, 8), (4, 3)])
def test_unet_depth_follows_image_size(image_size: int, depth: int) -> None:
    net = UNetGenerator(ngf=4, image_size=image_size)
    assert net.num_downs == depth
    assert net.stride == 2**depth
    assert len(net.down) == len(net.up) == depth


def test_unet_explicit_depth_overrides_image_size() -> None:
    net = UNetGenerator(ngf=4, num_downs=5, image_size=256)
    assert net.num_downs == 5
    assert net(torch.rand(1, 1, 40, 40)).shape == (1, 2, 40, 40)


def _dropouts(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Dropout)]


def test_unet_dropout_as_in_reference() -> None:
    net = UNetGenerator(ngf=4, num_downs=8)
    assert len(_dropouts(net)) == 3
    # All in the decoder, in the ngf*8 levels 4..6 (not the innermost, 7).
    assert len(_dropouts(net.up)) == 3
    assert [i for i, blk in enumerate(net.up) if _dropouts(blk)] == [4, 5, 6]
    assert all(d.p == 0.5 for d in _dropouts(net))
    assert len(_dropouts(UNetGenerator(ngf=4, num_downs=7))) == 2
    assert len(_dropouts(UNetGenerator(ngf=4, num_downs=6))) == 1
    assert len(_dropouts(UNetGenerator(ngf=4, num_downs=5))) == 0
    assert len(_dropouts(UNetGenerator(ngf=4, num_downs=8, use_dropout=False))) == 0


def test_unet_innermost_has_no_norm_and_output_is_tanh() -> None:
    net = UNetGenerator(ngf=4, num_downs=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.down[-1].modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.down[0].modules())
    assert isinstance(net.up[0][-1], nn.Tanh)


def test_unet_bias_only_without_batchnorm() -> None:
    def inner_biases(net: UNetGenerator) -> list[bool]:
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        outer = net.up[0][1]  # the output conv always has a bias
        return [m.bias is not None for m in convs if m is not outer]

    assert not any(inner_biases(UNetGenerator(ngf=4, num_downs=6, norm="batch")))
    assert all(inner_biases(UNetGenerator(ngf=4, num_downs=6, norm="instance")))
    assert UNetGenerator(ngf=4, num_downs=6).up[0][1].bias is not None


def test_unet_is_differentiable() -> None:
    net = UNetGenerator(ngf=4, image_size=64)
    x = torch.rand(2, 1, 45, 33, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


# --- init ----------------------------------------------------------------------------


def test_init_normal_statistics() -> None:
    conv = nn.Conv2d(128, 128, 4)  # 262k weights: std measurable to ~0.1%
    bn = nn.BatchNorm2d(4096)
    init_weights(nn.Sequential(conv, bn), "normal", 0.02)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert abs(conv.weight.mean().item()) < 1e-3
    assert torch.all(conv.bias == 0)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(bn.bias == 0)


def test_nets_are_initialised_on_construction() -> None:
    d = PatchDiscriminator(ndf=32)
    big = max((m for m in d.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    assert big.weight.std().item() == pytest.approx(0.02, rel=0.05)
    bns = torch.cat([m.weight for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bns.mean().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(init_type: str) -> None:
    net = UNetGenerator(ngf=4, num_downs=4, init_type=init_type)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_unknown_init_type() -> None:
    with pytest.raises(ConfigError):
        init_weights(nn.Conv2d(1, 1, 3), "uniformish")


# --- PatchGAN --------------------------------------------------------------------------


def probe_receptive_field(n_layers: int) -> tuple[int, int]:
    """Height and width of the input region that one central logit depends on."""
    net = PatchDiscriminator(ndf=4, n_layers=n_layers).double()
    # eval(): in train mode BatchNorm normalises with statistics of the whole batch, which
    # couples every pixel to every logit, and the probe would see the whole image.
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                # Positive weights: every path from input to logit contributes with the
                # same sign, so no gradient can cancel to exactly zero inside the field.
                m.weight.abs_().add_(1e-3)
    x = torch.randn(1, 3, 256, 256, dtype=torch.float64, requires_grad=True)
    out = net(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    hit = x.grad[0].abs().sum(0) != 0
    rows = hit.any(1).nonzero().flatten()
    cols = hit.any(0).nonzero().flatten()
    # The field must sit inside the image, or padding would cut it short.
    assert 0 < rows.min() and rows.max() < 255 and 0 < cols.min() and cols.max() < 255
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("n_layers,field", [(3, 70), (1, 16), (2, 34)])
def test_patchgan_receptive_field_by_gradient(n_layers: int, field: int) -> None:
    assert probe_receptive_field(n_layers) == (field, field)
    assert PatchDiscriminator(ndf=4, n_layers=n_layers).receptive_field == field


def test_patchgan_layers_as_in_reference() -> None:
    d = PatchDiscriminator(ndf=8, n_layers=3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    # widths are capped at ndf * 8
    assert max(c.out_channels for c in PatchDiscriminator(ndf=2, n_layers=5).modules()
               if isinstance(c, nn.Conv2d)) == 16


@pytest.mark.parametrize("shape", [(2, 3, 256, 256), (1, 3, 16, 16), (1, 3, 37, 53), (1, 3, 1, 1)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_patchgan_any_size_gives_patch_map(shape: tuple[int, ...], norm: str) -> None:
    out = PatchDiscriminator(ndf=8, norm=norm)(torch.randn(shape))
    assert out.ndim == 4 and out.shape[:2] == (shape[0], 1)
    assert out.shape[2] >= 1 and out.shape[3] >= 1
    assert torch.isfinite(out).all()


def test_patchgan_256_map_is_30x30() -> None:
    # The reference's 70x70 PatchGAN gives a 30x30 map on 256x256: padding must not change it.
    assert PatchDiscriminator(ndf=4)(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


# --- padding and config errors --------------------------------------------------------------


@pytest.mark.parametrize("h,w,mult,min_size,want", [
    (37, 53, 8, 0, (40, 56)), (17, 17, 256, 0, (256, 256)), (16, 16, 8, 70, (72, 72)),
    (64, 64, 64, 0, (64, 64)), (1, 1, 4, 0, (4, 4)),
])
def test_pad_to_multiple_and_crop(h: int, w: int, mult: int, min_size: int, want: tuple[int, int]) -> None:
    x = torch.randn(2, 3, h, w)
    padded, size = pad_to_multiple(x, mult, min_size)
    assert padded.shape[-2:] == want and size == (h, w)
    assert torch.equal(crop_to(padded, size), x)


def test_pad_reflects_when_it_can() -> None:
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5).contiguous()
    padded, _ = pad_to_multiple(x, 8)  # pad 3 < 5: reflect
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    padded, _ = pad_to_multiple(x, 16)  # pad 11 >= 5: mirrored in rounds
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    one, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 4)  # nothing to mirror: replicated
    assert one.shape == (1, 1, 4, 4) and torch.equal(one, torch.ones(1, 1, 4, 4))


# --- upsampling: transposed conv or resize-convolution -----------------------------------


def _interior_spread(net: nn.Module) -> float:
    """Std of the output's centre for an input flat there: what the net adds where the
    photo has no structure at all (a sky, a wall). The border's padding is kept far away,
    and so is a darker band at the top, which gives the photo some variance: on a
    wholly uniform one, instance norms output exact zeros (nets.layers.InstanceNorm2d)
    and a transposed conv shows no checkerboard either."""
    net.eval()
    photo = torch.full((1, 1, 256, 256), 0.3)
    photo[..., :16, :] = -0.5  # 80 px above the centre, beyond either net's receptive field
    with torch.no_grad():
        out = net(photo)
    return float(out[..., 96:160, 96:160].std(dim=(-2, -1)).max())  # per channel: a and b differ


@pytest.mark.parametrize("generator", [
    lambda upsample: UNetGenerator(ngf=8, num_downs=3, upsample=upsample),
    lambda upsample: ResnetGenerator(ngf=8, n_blocks=1, upsample=upsample),
])
def test_resize_convolution_leaves_a_flat_region_flat(generator) -> None:
    torch.manual_seed(0)
    transposed = _interior_spread(generator("transposed"))
    for upsample in ("nearest", "bilinear"):
        torch.manual_seed(0)
        assert _interior_spread(generator(upsample)) < 1e-6 < 1e-3 < transposed  # the checkerboard


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_resize_convolution_keeps_any_size_and_has_no_transposed_conv(upsample: str) -> None:
    for net in (UNetGenerator(ngf=8, upsample=upsample), ResnetGenerator(ngf=8, upsample=upsample)):
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
        assert net(torch.rand(1, 1, 37, 53)).shape == (1, 2, 37, 53)


def test_the_upsample_option_reaches_every_recipes_generators() -> None:
    from gancolor.build import build_recipe
    from helpers import compose

    for recipe_overrides in (["model=pix2pix"], ["model=cyclegan", "generator=resnet"], ["model=pix2pix", "generator=resnet"]):
        cfg = compose(*recipe_overrides, "data.image_size=32", "generator.ngf=8", "logger=none", "generator.upsample=bilinear")
        recipe = build_recipe(cfg)
        generators = recipe.generator_modules()
        assert generators and all(
            not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) and any(isinstance(m, nn.Upsample) for m in g.modules())
            for g in generators
        ), recipe_overrides


@pytest.mark.parametrize("build", [
    lambda: UNetGenerator(ngf=4, upsample="deconv"),
    lambda: ResnetGenerator(ngf=4, upsample="pixelshuffle"),
    lambda: norm_layer("groupnorm", 8),
    lambda: UNetGenerator(ngf=4, norm="batchnorm"),
    lambda: PatchDiscriminator(ndf=4, norm="Instance"),
    lambda: UNetGenerator(ngf=4, init_type="he"),
    lambda: UNetGenerator(ngf=4, num_downs=0),
    lambda: PatchDiscriminator(ndf=4, n_layers=0),
])
def test_bad_config_raises_config_error(build) -> None:
    with pytest.raises(ConfigError):
        build()


def test_norm_error_message() -> None:
    with pytest.raises(ConfigError, match=r"norm must be batch, instance or none, got 'groupnorm'"):
        norm_layer("groupnorm", 8)
