"""Terms against desaturation, pix2pix options: a VGG perceptual loss from a local weights
file (loaded from a file the test writes: random weights, the real file's layout) and
DDColor's colourfulness term."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from gancolor import color
from gancolor.build import build_recipe
from gancolor.errors import ConfigError
from gancolor.losses import VGG_LAYOUTS, VGG_TAPS, PerceptualLoss, colorfulness_loss
from helpers import compose, crops, shrink


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A torchvision vgg16 state dict as its download names the keys (features.* only:
    the classifier is optional, and 100M weights would make the test slow)."""
    torch.manual_seed(0)
    features = make_layers(cfgs[VGG_LAYOUTS["vgg16"]])[: VGG_TAPS["vgg16"][-1] + 1]
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(features.state_dict(prefix="features."), path)
    return path


@pytest.fixture(scope="module")
def rgb(photos) -> torch.Tensor:
    return crops(photos, size=32)


def test_perceptual_loss_loads_the_file_and_compares_features(vgg16_file, rgb):
    loss = PerceptualLoss(vgg16_file, "vgg16")
    saved = torch.load(vgg16_file, weights_only=True)
    torch.testing.assert_close(loss.features[0].weight, saved["features.0.weight"])
    assert not any(p.requires_grad for p in loss.parameters())
    assert float(loss(rgb, rgb)) == 0.0
    fake = color.to_gray(rgb).requires_grad_(True)
    value = loss(fake, rgb)
    value.backward()
    assert value > 0 and fake.grad.abs().sum() > 0
    loss.train()
    assert not loss.training  # dropout-free, but BatchNorm-style layers must never switch


@pytest.mark.parametrize("bad", ["missing", "not_vgg", "vgg19_layout"])
def test_perceptual_weights_that_do_not_fit_are_a_config_error(bad, vgg16_file, tmp_path):
    path = tmp_path / "weights.pth"
    if bad == "not_vgg":
        torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, path)
    elif bad == "vgg19_layout":
        path = vgg16_file  # vgg19 has more layers up to relu4_4 than the file holds
    with pytest.raises(ConfigError, match="loss.perceptual_weights"):
        PerceptualLoss(path, "vgg19" if bad == "vgg19_layout" else "vgg16")


def test_colorfulness_term_is_lower_for_colour_and_finite_on_gray(rgb):
    gray = color.to_gray(rgb).requires_grad_(True)
    on_gray = colorfulness_loss(gray)
    on_gray.backward()
    assert torch.isfinite(gray.grad).all() and gray.grad.abs().sum() > 0
    assert on_gray.item() == pytest.approx(1.0, abs=1e-3)
    assert colorfulness_loss(rgb) < on_gray - 0.1


def pix2pix(*overrides: str):
    return build_recipe(shrink(compose("model=pix2pix", *overrides)))


def test_off_by_default_and_the_vgg_stays_out_of_checkpoints(vgg16_file, rgb):
    cfg = compose("model=pix2pix")
    assert cfg.loss.lambda_perceptual == 0 and cfg.loss.lambda_colorfulness == 0
    recipe = pix2pix("loss.lambda_perceptual=1.0", f"loss.perceptual_weights={vgg16_file}", "loss.lambda_colorfulness=0.5")
    recipe.on_fit_start(None)
    assert recipe.perceptual is not None
    assert not any("perceptual" in key or "features" in key for key in recipe.state_dict())

    L, ab = color.rgb_to_lab_normalized(rgb)
    batch, state = {"L": L, "ab": ab}, {}
    recipe.discriminator_step(batch, state)
    loss, logs = recipe.generator_step(batch, state)
    assert {"loss", "gan", "L1", "perceptual", "colorfulness"} <= set(logs)
    loss.backward()
    assert all(p.grad is not None for p in recipe.generator.parameters())


def test_perceptual_without_weights_is_refused_before_training():
    recipe = pix2pix("loss.lambda_perceptual=1.0")
    with pytest.raises(ConfigError, match="perceptual_weights=PATH"):
        recipe.on_fit_start(None)
