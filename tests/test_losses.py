import math

import pytest
import torch

from gancolor.errors import ConfigError
from gancolor.losses import GANLoss, pixel_loss


def test_vanilla_is_binary_cross_entropy_on_logits():
    loss = GANLoss("vanilla")
    zero = torch.zeros(2, 1, 4, 4)
    assert loss(zero, True).item() == pytest.approx(math.log(2))
    assert loss(torch.full((1, 1, 2, 2), 20.0), True).item() < 1e-6
    assert loss(torch.full((1, 1, 2, 2), 20.0), False).item() == pytest.approx(20.0, rel=1e-4)


def test_lsgan_targets_one_and_zero():
    loss = GANLoss("lsgan")
    pred = torch.full((1, 1, 3, 3), 0.25)
    assert loss(pred, True).item() == pytest.approx(0.75**2)
    assert loss(pred, False).item() == pytest.approx(0.25**2)


def test_hinge_differs_for_discriminator_and_generator():
    loss = GANLoss("hinge")
    pred = torch.tensor([[-2.0, 0.5, 3.0]])
    assert loss(pred, True).item() == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert loss(pred, False).item() == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert loss(pred, True, for_discriminator=False).item() == pytest.approx(-0.5)


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="gan_mode"):
        GANLoss("wgan-typo")
    with pytest.raises(ConfigError, match="pixel loss"):
        pixel_loss("l3")
    assert pixel_loss("mse")(torch.ones(2), torch.zeros(2)).item() == 1.0
