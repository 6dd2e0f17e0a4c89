"""200 broken variations of valid images through one colorize run: each one is
colourised or skipped with one line; no traceback, no hang, the batch goes on."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_checkpoint

COUNT = 200
MAX_PIXELS = 4_000_000  # keeps what the fuzz declares within reach of a test machine
FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tif": "TIFF", "webp": "WEBP"}


def valid_image(ext: str, rng: np.random.Generator) -> bytes:
    height, width = int(rng.integers(8, 40)), int(rng.integers(8, 40))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels if rng.random() < 0.7 else pixels[..., 0])
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[ext])
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A valid gray PNG of side x side zeros: a few kilobytes that decode to side² bytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def declare_huge(data: bytes, ext: str, rng: np.random.Generator) -> bytes:
    """The same file, its header declaring a far larger size (checksums kept valid)."""
    side = int(rng.choice([3000, 40000, 65535]))
    out = bytearray(data)
    if ext == "png":  # IHDR right after the signature; its CRC covers the new size
        out[16:24] = struct.pack(">II", side, side)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif ext == "gif":  # logical screen and first image descriptor
        out[6:10] = struct.pack("<HH", side, side)
        at = bytes(out).find(b"\x2c", 13)
        if at > 0:
            out[at + 5 : at + 9] = struct.pack("<HH", side, side)
    elif ext == "bmp":
        out[18:26] = struct.pack("<ii", side, side)
    elif ext == "jpg":  # the baseline frame header
        at = bytes(out).find(b"\xff\xc0")
        if at > 0:
            out[at + 5 : at + 9] = struct.pack(">HH", side, side)
    else:  # no simple size field: cut it short instead
        return bytes(out[: len(out) // 2])
    return bytes(out)


def mutate(i: int, rng: np.random.Generator) -> tuple[str, bytes]:
    """The i-th broken file: (name, bytes)."""
    ext = list(FORMATS)[i % len(FORMATS)]
    data = valid_image(ext, rng)
    kind = ["truncated", "flipped", "header", "other-format", "huge", "bomb", "empty-tail"][i % 7]
    if kind == "truncated":
        data = data[: int(rng.integers(1, len(data)))]
    elif kind == "flipped":
        raw = bytearray(data)
        for at in rng.integers(0, len(raw), int(rng.integers(1, 9))):
            raw[at] ^= 1 << int(rng.integers(0, 8))
        data = bytes(raw)
    elif kind == "header":
        data = bytes(rng.integers(0, 256, 16, dtype=np.uint8)) + data[16:]
    elif kind == "other-format":  # a valid image of another format under this name
        data = valid_image(list(FORMATS)[(i + 1) % len(FORMATS)], rng)
    elif kind == "huge":
        data = declare_huge(data, ext, rng)
    elif kind == "bomb":
        ext, data = "png", png_bomb(int(rng.choice([1500, 2500, 6000])))  # 2.2, 6.2, 36 MP
    else:  # the right header, then garbage
        data = data[: len(data) // 3] + bytes(rng.integers(0, 256, len(data), dtype=np.uint8))
    return f"{i:03d}_{kind}.{ext}", data


@pytest.mark.slow
def test_two_hundred_broken_images_are_each_colourised_or_skipped_in_one_line(tmp_path):
    rng = np.random.default_rng(2024)
    source = tmp_path / "in"
    source.mkdir()
    names = []
    for i in range(COUNT):
        name, data = mutate(i, rng)
        (source / name).write_bytes(data)
        names.append(name)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"

    result = subprocess.run(
        [sys.executable, "-m", "gancolor.colorize", f"ckpt={ckpt}", f"input={source}", f"output={out}",
         f"max_pixels={MAX_PIXELS}", "batch_size=4", "progress_bar=false"],
        capture_output=True, text=True, timeout=300,  # a hang fails the test instead of stalling the suite
    )
    assert result.returncode in (0, 2), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr[-3000:]

    lines = result.stderr.splitlines()
    skipped = [line for line in lines if line.startswith("gancolor: skipped ")]
    assert all(line.startswith(("gancolor: skipped ", "gancolor: note: ")) for line in lines), result.stderr[-3000:]
    written = {p.stem for p in out.iterdir()} if out.exists() else set()
    assert not [p for p in (out.iterdir() if out.exists() else []) if p.name.startswith(".")], "a partial file was left"
    for name in names:  # each file: exactly one of a result or one line saying why not
        said = sum(f"{source / name}:" in line for line in skipped)
        assert (Path(name).stem in written) + said == 1, (name, said)

    counts = re.search(r"gancolor: (\d+) colourised(?:, (\d+) files? skipped)?", result.stdout)
    assert counts, result.stdout
    assert int(counts[1]) == len(written) and int(counts[2] or 0) == len(skipped) == COUNT - len(written)
    assert 0 < len(written) < COUNT  # both kinds occurred: the fuzz exercises both paths
    for path in out.iterdir():
        with Image.open(path) as image:
            image.load()
