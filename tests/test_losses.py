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


# -- WGAN-GP ---------------------------------------------------------------------------

from gancolor.losses import gradient_penalty  # noqa: E402


def test_wgan_gp_signs_and_that_it_needs_the_penalty():
    loss = GANLoss("wgan-gp", penalized=True)
    pred = torch.tensor([[1.0, 3.0]])
    assert loss(pred, True).item() == pytest.approx(-2.0)  # critic: raise D(real)
    assert loss(pred, False).item() == pytest.approx(2.0)  # critic: lower D(fake)
    assert loss(pred, True, for_discriminator=False).item() == pytest.approx(-2.0)  # G: raise D(fake)
    with pytest.raises(ConfigError, match="vanilla, lsgan, hinge, got 'wgan-gp'"):
        GANLoss("wgan-gp")  # a recipe that applies no penalty must not offer it


class LinearCritic(torch.nn.Module):
    """D(x) = c * sum(x): its gradient is c everywhere, so ||grad|| = |c| * sqrt(numel)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, x):
        return self.c * x.flatten(1).sum(1)


@pytest.mark.parametrize("c", [0.1, -0.3, 1 / math.sqrt(60)])
def test_gradient_penalty_has_the_known_answer_for_a_linear_critic(c):
    real, fake = torch.rand(3, 3, 4, 5), torch.rand(3, 3, 4, 5)  # 60 numbers per sample
    critic = LinearCritic(c)
    gp = gradient_penalty(critic, real, fake)
    expected = (abs(c) * math.sqrt(60) - 1) ** 2
    assert gp.item() == pytest.approx(expected, abs=1e-6)
    # The penalty trains the critic: d/dc (|c| sqrt(n) - 1)^2 = 2 (|c| sqrt(n) - 1) sqrt(n) sign(c).
    gp.backward()
    assert critic.c.grad.item() == pytest.approx(2 * (abs(c) * math.sqrt(60) - 1) * math.sqrt(60) * math.copysign(1, c), abs=1e-4)


def test_gradient_penalty_sums_a_patch_critic_per_sample():
    # A "patch" critic returning the input itself: each sample's summed score has
    # gradient 1 per pixel, norm sqrt(numel), whatever the mix of real and fake.
    gp = gradient_penalty(lambda x: x, torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2))
    assert gp.item() == pytest.approx((math.sqrt(4) - 1) ** 2)
