"""CIC's ab bins: the documented rule, the count it yields, and bin-centre files."""

import numpy as np
import pytest
import torch

from gancolor import color
from gancolor.errors import ConfigError


def test_bins_lie_on_the_grid_once_each_in_a_b_order():
    bins = color.gamut_bins()
    assert bins.shape == (color.CIC_GAMUT_Q, 2) == (261, 2)
    assert bins.dtype == torch.float32
    assert torch.equal(bins, torch.round(bins / 10) * 10)
    assert torch.unique(bins, dim=0).shape[0] == bins.shape[0]
    keys = (bins[:, 0] * 1000 + bins[:, 1]).tolist()
    assert keys == sorted(keys)
    assert bins.abs().max() <= 110  # the paper's ab range


def test_every_8bit_colour_lands_in_a_kept_bin_and_every_kept_bin_receives_colours():
    # Through the path training batches take (uint8 -> float -> normalised Lab), not the
    # rule's own code, so this checks the property the rule promises.
    bins = color.gamut_bins()
    side, offset = 27, 13  # cells of 10 covering +-130
    kept = torch.zeros(side * side, dtype=torch.bool)
    kept[(bins[:, 0] / 10).long().add(offset) * side + (bins[:, 1] / 10).long().add(offset)] = True
    received = torch.zeros(side * side, dtype=torch.long)
    levels = torch.arange(256, dtype=torch.uint8)
    for r0 in range(0, 256, 32):
        r, g, b = torch.meshgrid(levels[r0 : r0 + 32], levels, levels, indexing="ij")
        _, ab = color.rgb_to_lab_normalized(color.uint8_to_float(torch.stack([r, g, b]).reshape(1, 3, -1, 256)))
        cell = torch.round(ab[0].reshape(2, -1) * color.AB_SCALE / 10).long() + offset
        received += torch.bincount(cell[0] * side + cell[1], minlength=side * side)
    assert not (received[~kept] > 0).any(), "some 8-bit colours land outside the kept bins"
    assert (received[kept] > 0).all(), "some kept bins receive no colour"
    assert int(received.sum()) == 256**3


def test_the_rule_reproduces_the_table_it_is_served_from():
    assert torch.equal(color.compute_gamut_bins(10), color.gamut_bins(10))


def test_coarser_grids_follow_the_same_rule():
    coarse = color.gamut_bins(30.0)
    assert torch.equal(coarse, torch.round(coarse / 30) * 30)
    # Each fine cell's colours fall in the coarse cell of its centre or a neighbour:
    # every fine centre is within one coarse half-diagonal (plus a fine one) of a kept coarse centre.
    d2, _ = color.nearest_bins(color.gamut_bins(), coarse, 1)
    assert d2.sqrt().max() <= (15 + 5) * 2**0.5 + 1e-4
    assert len(coarse) < len(color.gamut_bins())


def test_bins_file_round_trip(tmp_path):
    bins = color.gamut_bins()
    path = tmp_path / "bins.npy"
    color.save_ab_bins(path, bins)
    assert np.load(path).shape == (261, 2)
    assert torch.equal(color.load_ab_bins(path), bins)


def test_a_published_style_313_bin_file_gives_313_bins(tmp_path):
    # A stand-in for Zhang et al.'s pts_in_hull.npy: 313 grid centres, saved as float64.
    grid = np.stack(np.meshgrid(np.arange(-110, 111, 10), np.arange(-110, 111, 10), indexing="ij"), -1).reshape(-1, 2)
    pts = grid[np.argsort(np.hypot(grid[:, 0] - 5, grid[:, 1] + 3), kind="stable")][:313].astype(np.float64)
    np.save(tmp_path / "pts_in_hull.npy", pts)
    bins = color.load_ab_bins(tmp_path / "pts_in_hull.npy")
    assert bins.shape == (313, 2) and bins.dtype == torch.float32
    assert torch.equal(bins, torch.from_numpy(pts).float())


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((10, 3)), "Q x 2"),
        (np.zeros(20), "Q x 2"),
        (np.array([[0.1, 0.2], [0.3, -0.4]]), "looks normalised"),
        (np.array([[10.0, 20.0], [10.0, 20.0]]), "repeats"),
        (np.array([[10.0, np.nan], [0.0, 20.0]]), "non-finite"),
    ],
)
def test_bad_bin_files_are_one_line_config_errors(tmp_path, array, message):
    path = tmp_path / "bins.npy"
    np.save(path, array)
    with pytest.raises(ConfigError, match=message) as info:
        color.load_ab_bins(path)
    assert "model.bins" in str(info.value) and "\n" not in str(info.value)


def test_missing_or_unreadable_bin_files(tmp_path):
    with pytest.raises(ConfigError, match="bins file not found"):
        color.load_ab_bins(tmp_path / "nope.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ConfigError, match="cannot read"):
        color.load_ab_bins(tmp_path / "text.npy")
