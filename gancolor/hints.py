"""User hints: colour points a person gives the generator (Zhang et al. 2017,
"Real-Time User-Guided Image Colorization with Learned Deep Priors").

The generator of a hints model sees 4 channels, as in the paper: L, then the hint map
(a and b of the hints, normalised like ab, 0 where there is none) and the hint mask
(1 where a hint is, else 0). With no hint at all the mask is empty and the same net
colourises automatically.

Training simulates hints (sec. 3.3): the number of points is geometric with p = 1/8
(counted from 0, as the authors' code does: 1/8 of the samples get no hint), each
point a square patch of 1-9 px whose location comes from a 2-D Gaussian around the
image centre (sigma a quarter of the size) or is uniform, and whose hint is the MEAN
ab of that patch in the truth. The locations are drawn in the data loader's workers
from each sample's seed (`HintPlanDataset`), so exact resume and worker-count
independence hold as for augmentation; the mean ab is taken on the device from the
batch's own ab (`hint_maps`).

Inference turns what a user gives (JSON points in photo pixels, or a scribble PNG)
into the same maps at the size the net sees (`UserHints.maps`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from gancolor import color
from gancolor.errors import ConfigError, UserError

HINT_CHANNELS = 3  # hint a, hint b, mask
LOCATIONS = ("gaussian", "uniform")
# A clicked point reaches the net as a patch this many pixels wide (at the net's size):
# inside the 1-9 px range of the training patches, and big enough to survive the
# mirrored frame's resampling of a small photo.
POINT_PATCH = 3
HINT_FILE_SUFFIXES = (".json", ".png")


class HintError(UserError):
    """A hints file that cannot be used: unreadable, malformed, or a point off the photo."""


# -- training: simulated hints -------------------------------------------------------------
@dataclass(frozen=True)
class HintSimulation:
    """How training draws hints (model.hints in the config; see conf/experiment/pix2pix_hints.yaml)."""

    p: float = 1 / 8  # geometric parameter: P(stop) before each further point
    locations: str = "gaussian"  # gaussian (around the centre, sigma = size/4) | uniform
    patch_sizes: tuple[int, ...] = tuple(range(1, 10))  # side of a hint patch, px, drawn uniformly
    max_points: int = 64  # cap on the geometric draw ((7/8)^64 ~ 2e-4 of samples reach it)
    no_hint_share: float = 0.0  # extra share of samples given no hint (the draw already gives p of them none)

    @classmethod
    def from_config(cls, node: Any) -> "HintSimulation | None":
        """model.hints: null/false -> None (no hints); true -> the paper's settings; a mapping -> those keys."""
        if node is None or node is False:
            return None
        if node is True:
            return cls()
        try:
            values = dict(node)
        except (TypeError, ValueError):
            raise ConfigError(f"model.hints: expected true, false/null or a mapping of {', '.join(cls.__dataclass_fields__)}, got {node!r}") from None
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"model.hints: unknown key(s) {', '.join(unknown)}; expected {', '.join(cls.__dataclass_fields__)}")
        if "patch_sizes" in values:
            values["patch_sizes"] = tuple(int(s) for s in values["patch_sizes"])
        simulation = cls(**values)
        simulation.check()
        return simulation

    def check(self) -> None:
        problems = [
            (0.0 < self.p <= 1.0, f"model.hints.p must be in (0, 1], got {self.p}"),
            (self.locations in LOCATIONS, f"model.hints.locations must be one of {', '.join(LOCATIONS)}, got {self.locations!r}"),
            (len(self.patch_sizes) > 0 and min(self.patch_sizes) >= 1, f"model.hints.patch_sizes must be sizes >= 1, got {list(self.patch_sizes)}"),
            (self.max_points >= 1, f"model.hints.max_points must be >= 1, got {self.max_points}"),
            (0.0 <= self.no_hint_share <= 1.0, f"model.hints.no_hint_share must be in [0, 1], got {self.no_hint_share}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ConfigError(message)

    def draw(self, rng: np.random.Generator, height: int, width: int, count: int | None = None) -> np.ndarray:
        """(max_points, 3) int32 rows [top, left, size] of hint patches; size 0 ends the list.
        `count` fixes the number of points (evaluation: N hints) instead of drawing it."""
        plan = np.zeros((max(self.max_points, count or 0), 3), dtype=np.int32)
        if count is None:
            if rng.random() < self.no_hint_share:
                return plan
            count = min(int(rng.geometric(self.p)) - 1, self.max_points)  # numpy counts the stopping trial too
        for i in range(count):
            size = min(int(rng.choice(self.patch_sizes)), height, width)
            plan[i] = (self._start(rng, height - size + 1), self._start(rng, width - size + 1), size)
        return plan

    def _start(self, rng: np.random.Generator, room: int) -> int:
        if self.locations == "uniform":
            return int(rng.integers(room))
        return int(np.clip(rng.normal(room / 2, room / 4), 0, room - 1))


class HintPlanDataset(Dataset):
    """A training dataset whose items also carry "hint_plan" (see HintSimulation.draw),
    drawn from the sample's seed (EpochSampler hands out (index, seed) pairs)."""

    def __init__(self, dataset: Dataset, simulation: HintSimulation) -> None:
        self.dataset, self.simulation = dataset, simulation
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        # A stream of its own: the augmentation's draws (seeded with the same seed) are untouched.
        rng = np.random.default_rng([index[1], 2017]) if isinstance(index, tuple) else self._rng
        height, width = item["rgb"].shape[-2:]
        return {**item, "hint_plan": torch.from_numpy(self.simulation.draw(rng, height, width))}

    def __getattr__(self, name: str):
        # paths, reseed, set_max_unreadable_share, ...: the wrapped dataset's.
        if name in ("dataset", "simulation", "_rng"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def hint_maps(ab: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Truth ab (N, 2, H, W) and hint plans (N, K, 3) -> hint maps (N, 3, H, W):
    each patch's mean ab where it lies (a later patch over an earlier one wins, as in
    the authors' code), and the mask."""
    n, _, height, width = ab.shape
    plan = plan.to(ab.device).long()
    used = int((plan[..., 2] > 0).sum(1).max()) if plan.numel() else 0
    maps = ab.new_zeros((n, HINT_CHANNELS, height, width))
    if used == 0:
        return maps
    plan = plan[:, :used]
    top, left, size = plan.unbind(-1)
    bottom, right = top + size, left + size
    # Patch sums from an integral image: 4 lookups per patch, whatever its size.
    integral = F.pad(ab.float().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    batch = torch.arange(n, device=ab.device).view(n, 1)
    sums = integral[batch, :, bottom, right] - integral[batch, :, top, right] - integral[batch, :, bottom, left] + integral[batch, :, top, left]
    means = sums / size.clamp(min=1).unsqueeze(-1).pow(2)  # (N, K, 2)
    rows = torch.arange(height, device=ab.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=ab.device).view(1, 1, 1, width)
    inside = (
        (rows >= top[..., None, None]) & (rows < bottom[..., None, None]) & (cols >= left[..., None, None]) & (cols < right[..., None, None])
    ) & (size > 0)[..., None, None]
    order = torch.arange(1, used + 1, device=ab.device).view(1, used, 1, 1)
    owner = (inside * order).amax(1)  # (N, H, W): 1-based index of the patch shown there, 0: none
    means = torch.cat([means.new_zeros(n, 1, 2), means], 1)
    chosen = means[batch.view(n, 1, 1), owner]  # (N, H, W, 2)
    maps[:, :2] = chosen.permute(0, 3, 1, 2).to(maps.dtype)
    maps[:, 2] = (owner > 0).to(maps.dtype)
    return maps


def generator_input(L: torch.Tensor, hints: torch.Tensor | None) -> torch.Tensor:
    """L (N, 1, H, W) and hint maps (N, 3, H, W) or None (no hint) -> (N, 4, H, W)."""
    if hints is None:
        hints = L.new_zeros((L.shape[0], HINT_CHANNELS, *L.shape[-2:]))
    return torch.cat([L, hints.to(L.dtype)], 1)


# -- the generator's input layer ---------------------------------------------------------
def input_channels(net: nn.Module) -> int:
    """How many channels a generator takes (its in_channels, else its first conv's)."""
    declared = getattr(net, "in_channels", None)
    if isinstance(declared, int):
        return declared
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ConfigError(f"generator: cannot tell how many input channels {type(net).__name__} takes")
    return first.in_channels


def check_hint_generator(net: nn.Module) -> None:
    """A hints model's generator must take L + 3 hint channels."""
    channels = input_channels(net)
    if channels != 1 + HINT_CHANNELS:
        raise ConfigError(
            f"model.hints needs a generator that takes {1 + HINT_CHANNELS} channels (L, hint ab, mask), this one takes "
            f"{channels}: set generator.in_channels={1 + HINT_CHANNELS} (experiment=pix2pix_hints does)"
        )


@torch.no_grad()
def zero_hint_weights(net: nn.Module) -> None:
    """Make the weights that read the hint channels start at zero, so a new hints net
    (and a pretrained encoder behind it) computes at first exactly what it would from L
    alone. For a DynamicUNet the layer that reads the input is its 1x1 stem in front of
    the pretrained encoder: its L column gets the whole L -> ImageNet-RGB map."""
    stem = getattr(net, "stem", None)
    if isinstance(stem, nn.Conv2d) or hasattr(net, "stem_weight"):
        weight = stem.weight if isinstance(stem, nn.Conv2d) else net.stem_weight
        weight[:, 0] = weight.sum(1)  # the constructor spread the map over all channels
        weight[:, 1:] = 0
        return
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels > 1:
        first.weight[:, 1:] = 0


# -- inference: what a user gives --------------------------------------------------------
@dataclass
class Point:
    x: float  # photo pixels, from the left
    y: float  # photo pixels, from the top
    rgb: tuple[int, int, int]


_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_color(value: Any, where: str) -> tuple[int, int, int]:
    match = _HEX.match(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise HintError(f"{where}: colour must be '#rrggbb', got {value!r}")
    digits = match.group(1)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def parse_points(items: Any, where: str) -> list[Point]:
    """A JSON list of {"x": .., "y": .., "color": "#rrggbb"} -> Points."""
    if not isinstance(items, list):
        raise HintError(f"{where}: expected a JSON list of {{\"x\", \"y\", \"color\"}} points")
    points = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"x", "y", "color"} <= set(item):
            raise HintError(f"{where}: point {i} must have x, y and color, got {item!r}")
        try:
            x, y = float(item["x"]), float(item["y"])
        except (TypeError, ValueError):
            raise HintError(f"{where}: point {i}: x and y must be numbers, got {item['x']!r}, {item['y']!r}") from None
        points.append(Point(x, y, parse_color(item["color"], f"{where}: point {i}")))
    return points


@dataclass
class UserHints:
    """Hints for one photo: points in its pixel coordinates, and/or a scribble (an RGBA
    image of the photo's size whose non-transparent pixels are hints)."""

    points: list[Point] = field(default_factory=list)
    scribble: np.ndarray | None = None  # (H, W, 4) uint8
    source: str = "hints"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UserHints":
        path = Path(path)
        try:
            if path.suffix.lower() == ".json":
                return cls(parse_points(json.loads(path.read_text(encoding="utf-8")), str(path)), source=str(path))
            from PIL import Image

            with Image.open(path) as image:
                return cls(scribble=np.array(image.convert("RGBA")), source=str(path))
        except HintError:
            raise
        except (OSError, ValueError) as exc:
            raise HintError(f"hints: cannot read {path}: {' '.join(str(exc).split())}") from None

    def check(self, height: int, width: int) -> None:
        """Every hint must lie on the photo (height x width px)."""
        for i, point in enumerate(self.points):
            if not (0 <= point.x < width and 0 <= point.y < height):
                raise HintError(f"{self.source}: point {i} at x={point.x:g}, y={point.y:g} is outside the {width}x{height} image")
        if self.scribble is not None and self.scribble.shape[:2] != (height, width):
            h, w = self.scribble.shape[:2]
            raise HintError(f"{self.source}: the scribble is {w}x{h} px but the image is {width}x{height}: draw it on a copy of the photo's size")

    def maps(self, height: int, width: int, small: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Hint maps (1, 3, h, w) at the net's size `small` = (h, w) of a photo height x width px."""
        self.check(height, width)
        h, w = small
        maps = torch.zeros((1, HINT_CHANNELS, h, w), device=device)
        if self.scribble is not None:
            maps = _scribble_maps(self.scribble, small, device)
        if self.points:
            rgb = torch.tensor([p.rgb for p in self.points], dtype=torch.float32, device=device)
            ab = _ab_of(rgb)  # (P, 2)
            for point, point_ab in zip(self.points, ab):
                # Pixel centres map to pixel centres: x + 0.5 at full size is at (x + 0.5) * w / W.
                cx = int((point.x + 0.5) * w / width)
                cy = int((point.y + 0.5) * h / height)
                half = POINT_PATCH // 2
                top, left = max(0, cy - half), max(0, cx - half)
                bottom, right = min(h, cy - half + POINT_PATCH), min(w, cx - half + POINT_PATCH)
                maps[0, :2, top:bottom, left:right] = point_ab.view(2, 1, 1)
                maps[0, 2, top:bottom, left:right] = 1.0
        return maps

    def __bool__(self) -> bool:
        return bool(self.points) or (self.scribble is not None and bool((self.scribble[..., 3] > 0).any()))


def truth_hints(photo: np.ndarray, count: int, rng: np.random.Generator, patch: int, locations: str = "uniform") -> UserHints:
    """`count` hints sampled from a colour photo's own colours, as the evaluation of Zhang
    et al. 2017 (fig. 4) reveals them: each a point at a location drawn like the training's
    (uniform or Gaussian around the centre), coloured with the mean colour of the `patch` x
    `patch` px square around it. A generator gives the same first points for any count, so
    a curve over counts adds points to the same ones."""
    height, width = photo.shape[:2]
    plan = HintSimulation(locations=locations, patch_sizes=(patch,)).draw(rng, height, width, count)[:count]
    points = []
    for top, left, size in plan.tolist():
        mean = photo[top : top + size, left : left + size, :3].reshape(-1, 3).mean(0)
        points.append(Point(left + size // 2, top + size // 2, tuple(int(round(v)) for v in mean)))
    return UserHints(points, source=f"{count} hints sampled from the truth")


def _ab_of(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(P, 3) sRGB 0-255 -> (P, 2) normalised ab."""
    rgb = (rgb_uint8 / 255.0).T.reshape(1, 3, 1, -1)
    _, ab = color.rgb_to_lab_normalized(rgb)
    return ab.reshape(2, -1).T


def _scribble_maps(scribble: np.ndarray, small: tuple[int, int], device) -> torch.Tensor:
    """A full-size RGBA scribble -> hint maps at `small`: where any scribbled pixel
    falls in a small pixel, the mean ab of the scribbled pixels there."""
    rgba = torch.from_numpy(np.ascontiguousarray(scribble)).to(device)
    mask = (rgba[..., 3] > 0).float()[None, None]
    rgb = color.uint8_to_float(rgba[..., :3].permute(2, 0, 1).unsqueeze(0))
    _, ab = color.rgb_to_lab_normalized(rgb)
    # Area sums of ab over scribbled pixels, and of the mask, then their ratio.
    ab_sum = F.adaptive_avg_pool2d(ab * mask, small)
    share = F.adaptive_avg_pool2d(mask, small)
    hit = share > 0
    maps = torch.zeros((1, HINT_CHANNELS, *small), device=device)
    maps[:, :2] = torch.where(hit, ab_sum / share.clamp(min=1e-8), torch.zeros_like(ab_sum))
    maps[:, 2:] = hit.float()
    return maps


def hint_file_for(image: Path, hints: Path, input_root: Path | None) -> Path | None:
    """The hints file of `image` in the folder `hints`: the same relative path (or name)
    with .json or .png; None when it has none."""
    relative = image.relative_to(input_root) if input_root is not None and input_root in image.parents else Path(image.name)
    for suffix in HINT_FILE_SUFFIXES:
        candidate = hints / relative.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def takes_hints(recipe) -> bool:
    """Whether a recipe's generator was trained with hint channels."""
    return getattr(recipe, "hints", None) is not None


# The end of the line that refuses hints for a model that takes none: "<model> " + this.
TRAINED_WITHOUT_HINTS = "was trained without hints (model.hints; train one with experiment=pix2pix_hints)"


def connect(recipe, data) -> None:
    """Training: a hints recipe's data module draws the hint plans."""
    if not takes_hints(recipe):
        return
    simulate = getattr(data, "simulate_hints", None)
    if simulate is None:
        raise ConfigError(f"model.hints needs a data module of colour photos (data=sample|folder|aligned), not {type(data).__name__}")
    simulate(recipe.hints)
