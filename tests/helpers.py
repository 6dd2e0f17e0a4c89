"""What several test files need: running `python -m gancolor` as a user does, reading
what a run logged, composing the config, comparing weights, writing photo folders and
tiny checkpoints. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from gancolor import color
from gancolor.build import build_recipe
from gancolor.checkpoint import atomic_save, make_checkpoint
from gancolor.errors import ConfigError

# The repository's own configs, whichever gancolor is installed.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# A pix2pix small enough to build and run in a blink on the CPU.
TINY_PIX2PIX = ["data.image_size=32", "generator.ngf=8", "discriminator.ndf=8", "logger=none"]


# -- the command line -----------------------------------------------------------------------
def gancolor_env(cache: Path) -> dict[str, str]:
    """A subprocess's environment: sample photos cached under `cache`, W&B offline and quiet."""
    return {**os.environ, "GANCOLOR_CACHE": str(cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def run_gancolor(args: list[str], cwd: Path, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """One training command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "gancolor", *args], cwd=cwd, env=gancolor_env(cache), capture_output=True, text=True, timeout=timeout
    )


def trained_by_cli(folder: Path, args: list[str], cache: Path) -> dict[str, Path]:
    """`python -m gancolor ARGS` (tests/warm.py) run in `folder` into folder/full, which must succeed:
    the paths {"tmp": folder, "cache": cache, "run": folder/full}."""
    import warm  # warm imports this module

    paths = {"tmp": folder, "cache": cache, "run": folder / "full"}
    result = warm.run_gancolor([*args, f"hydra.run.dir={paths['run']}"], folder, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return paths


def one_error_line(output: str | subprocess.CompletedProcess) -> str:
    """The single `gancolor: error: ...` line a user mistake must give (stderr, or the run)."""
    stderr = output.stderr if isinstance(output, subprocess.CompletedProcess) else output
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("gancolor: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def read_metrics(run: Path) -> list[dict]:
    """The rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def strip_speed(rows: list[dict]) -> list[dict]:
    """Everything a run logs except wall-clock speed, which no two runs share."""
    return [{k: v for k, v in r.items() if k not in SPEED_KEYS} for r in rows]


SPEED_KEYS = ("train/images_per_sec", "train/data_wait")  # wall-clock figures


# -- configs and checkpoints ------------------------------------------------------------------
def compose(*overrides: str, config_name: str = "config", return_hydra_config: bool = False) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`, as the command line would compose it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


# Tiny sizes for whichever of these keys a config has: a new net or data config that
# names its sizes the same way is shrunk without being listed anywhere.
TINY_SIZES = {
    "generator": {"ngf": 4, "n_blocks": 1, "conv_dim": 4, "repeat_num": 1, "width_mult": 0.0625, "decoder_width_mult": 0.125},
    "discriminator": {"ndf": 4, "n_layers": 1, "conv_dim": 4, "repeat_num": 1},
    "data": {"image_size": 32, "batch_size": 2, "num_workers": 0, "repeats": 1},
    "trainer": {"device": "cpu", "progress_bar": False},
}


def shrink(cfg: DictConfig) -> DictConfig:
    """`cfg`, changed in place to tiny nets on 32 px images on the CPU."""
    for group, sizes in TINY_SIZES.items():
        node = cfg.get(group)
        for key, value in sizes.items():
            if node is not None and key in node:
                node[key] = value
    encoder = (cfg.get("generator") or {}).get("encoder")
    if encoder is not None and "weights" in encoder:
        encoder.weights = False  # random on purpose: no file to find, no warning
    return cfg


def save_checkpoint(path: Path, cfg: DictConfig, recipe: torch.nn.Module, **state) -> Path:
    """A checkpoint of `recipe` with its resolved config, as training writes one."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return atomic_save(make_checkpoint(config, recipe=recipe.name, nets=recipe.state_dict(), **state), path)


def tiny_checkpoint(path: Path, seed: int = 0, **state) -> Path:
    """A tiny pix2pix checkpoint with seeded random weights, for tests of the plumbing
    around a net (colorize, evaluate), not of the quality of its colours."""
    cfg = compose(*TINY_PIX2PIX)
    torch.manual_seed(seed)
    return save_checkpoint(path, cfg, build_recipe(cfg), **state)


# -- weights ------------------------------------------------------------------------------------
def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of a module's parameters, to tell later whether a step changed them."""
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- images -----------------------------------------------------------------------------------
def crops(photos: list[np.ndarray], size: int = 32, offset: int = 100) -> torch.Tensor:
    """The same square of each photo, as an sRGB batch in [0, 1]."""
    return color.uint8_to_float(torch.stack([torch.from_numpy(p[offset : offset + size, offset : offset + size]).permute(2, 0, 1) for p in photos]))


def save_photo(array: np.ndarray, path: Path) -> Path:
    """A photo as a PNG at a quarter of its size: small files, quick tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = array.shape[:2]
    Image.fromarray(array).resize((w // 4, h // 4), Image.Resampling.BOX).save(path)
    return path


def write_photo_folder(folder: Path, photos: list[np.ndarray], copies: int) -> Path:
    """`copies` shifted versions of every photo in `folder`: a small folder of distinct colour photos."""
    for i in range(copies):
        for j, photo in enumerate(photos):
            save_photo(np.roll(photo, 40 * i, axis=1), folder / f"p{i}_{j}.png")
    return folder


def synthetic_nir(rgb: np.ndarray, bits: int = 8) -> np.ndarray:
    """A stand-in near-infrared image of a colour photo: a fixed channel mix (0.1 R +
    0.3 G + 0.6 B) under a gamma of 0.8, as uint8 or uint16 (bits=16)."""
    mix = (rgb[..., :3].astype(np.float64) @ np.array([0.1, 0.3, 0.6])) / 255.0
    top = 255 if bits == 8 else 65535
    return np.rint(mix**0.8 * top).astype(np.uint8 if bits == 8 else np.uint16)


def write_nir_pairs(folder: Path, photos: list[np.ndarray], bits: int = 8, size: tuple[int, int] = (72, 56)) -> Path:
    """Each photo, shrunk to `size` (w, h), as scene_<i>_rgb.png next to its synthetic
    scene_<i>_nir.png (8- or 16-bit): the EPFL RGB-NIR layout, in folder/scenes/."""
    for i, photo in enumerate(photos):
        rgb = np.asarray(Image.fromarray(photo[..., :3]).resize(size, Image.Resampling.BOX))
        (folder / "scenes").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / "scenes" / f"scene_{i}_rgb.png")
        Image.fromarray(synthetic_nir(rgb, bits)).save(folder / "scenes" / f"scene_{i}_nir.png")
    return folder


def write_attribute_file(path: Path, rows: dict[str, list[int]], names: list[str], count: int | None = None) -> Path:
    """A CelebA-style list_attr_celeba.txt: a count line, the attribute names, then
    `file v1 v2 ...` with 1 / -1 (`count` overrides the first line, to test a wrong one)."""
    lines = [str(len(rows) if count is None else count), " ".join(names) + " "]
    lines += [f"{name}  " + "  ".join(f"{v:2d}" for v in values) for name, values in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def phase_steps(recipe, phase: str):
    """The recipe's steps for `phase`; None for a phase it does not have (the trainer
    refuses, before training, a schedule that asks for one)."""
    try:
        return getattr(recipe, f"{phase}_steps")()
    except (NotImplementedError, ConfigError):
        return None


# -- user hints (gancolor.hints) ----------------------------------------------------------------
HINTS_SIZE = 16
TINY_HINTS = ("experiment=pix2pix_hints", f"data.image_size={HINTS_SIZE}", "generator.ngf=8", "generator.use_dropout=false",
              "generator.norm=instance", "discriminator.ndf=8", "logger=none")


def halves(rng: np.random.Generator, n: int, height: int, width: int, ab: np.ndarray | None = None) -> torch.Tensor:
    """sRGB (n, 3, H, W): left half L 45, right half L 70, each of one random (or given:
    (n, 2 channels, 2 halves)) ab. Their colours cannot be told from their lightness:
    only hints can tell a net what they are."""
    from kornia.color import lab_to_rgb

    ab = rng.uniform(-45, 45, (n, 2, 2)) if ab is None else ab
    lab = np.zeros((n, 3, height, width), np.float32)
    lab[:, 0, :, : width // 2], lab[:, 0, :, width // 2 :] = 45.0, 70.0
    lab[:, 1:, :, : width // 2] = ab[:, :, 0, None, None]
    lab[:, 1:, :, width // 2 :] = ab[:, :, 1, None, None]
    return lab_to_rgb(torch.from_numpy(lab)).clamp(0, 1)


def trained_hints_model(path: Path, steps: int = 80):
    """A tiny hints pix2pix G trained in-process on `halves` with simulated hints (a few
    seconds on one core), and its checkpoint at `path`: (recipe, path)."""
    from gancolor.hints import hint_maps

    cfg = compose(*TINY_HINTS)
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    optimizer = torch.optim.Adam(recipe.generator.parameters(), lr=3e-3, betas=(0.5, 0.999))
    rng = np.random.default_rng(0)
    recipe.train()
    for _ in range(steps):
        L, ab = color.rgb_to_lab_normalized(halves(rng, 8, HINTS_SIZE, HINTS_SIZE))
        plans = torch.from_numpy(np.stack([recipe.hints.draw(rng, HINTS_SIZE, HINTS_SIZE) for _ in range(8)]))
        loss, _ = recipe.generator_pixel_step({"L": L, "ab": ab, "hints": hint_maps(ab, plans)}, {})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    recipe.eval()
    return recipe, save_checkpoint(path, cfg, recipe)


def header_only_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with no pixels worth the name: a
    decompression bomb's header, for what is decided before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(10))) + chunk(b"IEND", b""))
