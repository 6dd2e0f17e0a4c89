import numpy as np
import pytest
import torch
from skimage import color as skcolor

from gancolor.color import (
    batch_to_lab,
    float_to_uint8,
    gray_to_rgb,
    lab_normalized_to_rgb,
    rgb_to_lab_normalized,
    uint8_to_float,
)


def to_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()


def test_round_trip_on_real_photos_is_below_one_level(photos):
    for image in photos:
        rgb = uint8_to_float(to_batch(image))
        L, ab = rgb_to_lab_normalized(rgb)
        back = lab_normalized_to_rgb(L, ab)
        assert (back - rgb).abs().max().item() < 1 / 255
        assert torch.equal(float_to_uint8(back), to_batch(image))


def test_normalisation_ranges_and_agreement_with_scikit_image(photos):
    image = photos[0]
    L, ab = rgb_to_lab_normalized(uint8_to_float(to_batch(image)))
    assert L.shape == (1, 1, *image.shape[:2]) and ab.shape == (1, 2, *image.shape[:2])
    assert -1.0 <= L.min() and L.max() <= 1.0
    assert ab.abs().max() <= 1.0
    reference = skcolor.rgb2lab(image)  # D65, the same white point as kornia
    np.testing.assert_allclose(((L[0, 0] + 1) * 50).numpy(), reference[..., 0], atol=0.05)
    np.testing.assert_allclose((ab[0] * 110).permute(1, 2, 0).numpy(), reference[..., 1:], atol=0.1)


def test_black_white_and_gray_map_to_known_lab():
    rgb = torch.tensor([0.0, 1.0, 0.5]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    L, ab = rgb_to_lab_normalized(rgb)
    assert L[0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 53.389 / 50 - 1], abs=1e-3)
    assert ab.abs().max() < 1e-3  # neutral colours carry no chroma


def test_batch_to_lab_from_uint8_and_gray_rendering(photos):
    batch = torch.stack([to_batch(p[:64, :64])[0] for p in photos])
    L, ab = batch_to_lab(batch, "cpu")
    assert L.dtype == torch.float32 and L.shape == (len(photos), 1, 64, 64)
    gray = gray_to_rgb(L)
    # A gray rendering has equal channels and the same lightness.
    assert (gray[:, 0] - gray[:, 1]).abs().max() < 2e-3 and (gray[:, 1] - gray[:, 2]).abs().max() < 2e-3
    L2, ab2 = rgb_to_lab_normalized(gray)
    assert (L2 - L).abs().max() < 2e-3 and ab2.abs().max() < 2e-3
