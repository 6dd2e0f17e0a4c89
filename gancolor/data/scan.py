"""One pass over a folder's files before training: keep what is usable colour.

A colourisation model learns nothing from grayscale targets, and a corrupt file should
be reported once, up front, not crash a worker mid-epoch. Each file is fully decoded,
but small: libjpeg decodes JPEGs at 1/2-1/8 scale (PIL's draft mode), and the decoders
release the GIL, so a thread pool scans thousands of photos in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gancolor.data.images import GRAY_TOLERANCE, ImageTooLarge, UnreadableImage, UnsupportedFormat, is_grayscale, load_first_frame, skipped_summary

# Large enough for is_grayscale's own downsampling to have pixels to average over.
_SCAN_SIDE = 256


@dataclass(frozen=True)
class ScanResult:
    """Files sorted into usable colour images, grayscale ones, unreadable ones and
    files of a format Pillow does not read.

    Each list keeps the order of the scanned paths; `unreadable` and `unsupported`
    pair a file with the reason. `animated` lists the good or grayscale files that
    hold several frames (the first one is used).
    """

    good: list[Path] = field(default_factory=list)
    grayscale: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    unsupported: list[tuple[Path, str]] = field(default_factory=list)
    animated: list[Path] = field(default_factory=list)
    too_large: list[Path] = field(default_factory=list)  # of `unreadable`, those refused for their size

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """(path, kind) of every file passed over."""
        return (
            [(p, "grayscale") for p in self.grayscale]
            + [(p, ImageTooLarge.kind if p in self.too_large else UnreadableImage.kind) for p, _ in self.unreadable]
            + [(p, UnsupportedFormat.kind) for p, _ in self.unsupported]
        )

    def summary(self) -> str:
        """The one-line count callers log at INFO:
        "6 colour images; 4 files skipped: 2 grayscale, 1 unreadable, 1 unsupported format: a.xyz"."""
        skipped = skipped_summary(self.skipped)
        return f"{len(self.good)} colour images" + (f"; {skipped}" if skipped else "")


def scan_color_images(
    paths: Iterable[str | os.PathLike[str]],
    num_workers: int | None = None,
    tolerance: int = GRAY_TOLERANCE,
    max_pixels: int | None = None,
) -> ScanResult:
    """Decode every file (small) and sort it into good / grayscale / unreadable; one
    over `max_pixels` is unreadable and listed in `too_large`, from its header.

    `num_workers` threads (default: a few per CPU, as decoding also waits on disk).
    Logging is left to the caller, which knows what the files are for.
    """
    paths = [Path(p) for p in paths]
    workers = num_workers if num_workers and num_workers > 0 else min(32, (os.cpu_count() or 1) + 4)
    result = ScanResult()
    if not paths:
        return result
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        verdicts = pool.map(lambda p: _classify(p, tolerance, max_pixels), paths)
        for path, (kind, reason) in zip(paths, verdicts):
            if kind in ("good", "grayscale"):
                (result.good if kind == "good" else result.grayscale).append(path)
                if reason == "animated":
                    result.animated.append(path)
            elif kind == UnsupportedFormat.kind:
                result.unsupported.append((path, reason))
            else:
                result.unreadable.append((path, reason))
                if kind == ImageTooLarge.kind:
                    result.too_large.append(path)
    return result


def _classify(path: Path, tolerance: int, max_pixels: int | None) -> tuple[str, str]:
    try:
        rgb, animated = load_first_frame(path, max_side=_SCAN_SIDE, max_pixels=max_pixels)
    except UnreadableImage as exc:
        return exc.kind, exc.reason
    return ("grayscale" if is_grayscale(rgb, tolerance) else "good"), ("animated" if animated else "")
