"""Paired near-infrared data (data=nir): each NIR image with the colour photo of the same
scene, for a recipe that predicts the whole colour image from NIR (model.target=lab|rgb).

Two layouts, chosen by the options given, never guessed:

    data.root=DIR                        NAME_nir.EXT next to NAME_rgb.EXT in one folder
                                         (any depth): the EPFL RGB-NIR scene set's
                                         country/0001_nir.tiff + country/0001_rgb.tiff
    data.nir_root=DIR data.rgb_root=DIR  the same relative name, any extension, in each:
                                         nir/a/0001.png + rgb/a/0001.jpg

Each layout may hold train/ and val/ subfolders (data.root/train, or nir_root/train with
rgb_root/train); otherwise the pairs are split by seed. A file without its partner is
named in one warning line (an error when nothing pairs up). The pair's images must have
one size; both get the same random crop and flip. NIR files are single-channel, 8- or
16-bit (scaled by the full range of their depth); an RGB file whose channels are equal
is taken as NIR too, one in colour is refused (NotNIR).

python -m gancolor.evaluate takes the same options and the same pairs (find_pairs,
check_pairs), for an NIR checkpoint, without the split: every pair under the folders.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gancolor import color
from gancolor.config_check import expand_folder, folder_problem
from gancolor.data.datamodule import FolderDataModule, seeded_split
from gancolor.data.datasets import DEFAULT_MAX_UNREADABLE_SHARE, Transform, _SkippingDataset, hwc_to_chw
from gancolor.data.images import UnreadableImage, find_images, is_grayscale, load_image, load_rgb, skipped_summary
from gancolor.data.scan import ScanResult, scan_color_images
from gancolor.data.transforms import PAIRED_TARGET, eval_transform, train_transform
from gancolor.errors import ConfigError, DataError

log = logging.getLogger("gancolor.data")

NIR_SUFFIX, RGB_SUFFIX = "_nir", "_rgb"
_NAMED_UNPAIRED = 5  # files the warning names before "and N more"


class NotNIR(UnreadableImage):
    """A colour image where a single-channel NIR image was expected."""

    kind = "not NIR"


def nir_pixels(pixels: np.ndarray, path: str | os.PathLike[str] = "?") -> np.ndarray:
    """Decoded NIR pixels ((H, W) uint8/uint16, or (H, W, 3) uint8 with equal channels)
    -> float32 (H, W) in [0, 1], each depth scaled by its full range."""
    if pixels.ndim == 3:
        if not is_grayscale(pixels):
            raise NotNIR(path, "a colour image, where a single-channel NIR image is expected")
        # Stored as RGB with (about) equal channels: their mean is the NIR value.
        return pixels.mean(axis=2, dtype=np.float32) / np.float32(255.0)
    full_scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return pixels.astype(np.float32) / np.float32(full_scale)


def load_nir(path: str | os.PathLike[str]) -> np.ndarray:
    """An NIR file -> float32 (H, W) in [0, 1], upright per EXIF (alpha ignored)."""
    return nir_pixels(load_image(path).pixels, path)


# -- pairing ---------------------------------------------------------------------------


def pair_side_by_side(folder: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(nir, rgb) pairs of NAME_nir.* / NAME_rgb.* files in the same folder, and a note
    for each file left over (no partner, two candidates, or neither suffix)."""
    groups: dict[tuple[Path, str], dict[str, list[Path]]] = defaultdict(lambda: {"nir": [], "rgb": []})
    notes: list[str] = []
    for path in find_images(folder):
        stem = path.stem
        kind = next((k for k, suffix in (("nir", NIR_SUFFIX), ("rgb", RGB_SUFFIX)) if stem.lower().endswith(suffix)), None)
        if kind is None:
            notes.append(f"{_rel(path, folder)} (named neither *{NIR_SUFFIX}.* nor *{RGB_SUFFIX}.*)")
            continue
        groups[(path.parent, stem[: -len(NIR_SUFFIX)])][kind].append(path)
    return _pairs_of(groups, folder, notes)


def pair_folders(nir_root: Path, rgb_root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(nir, rgb) pairs of files with the same path, extension aside, under the two
    folders, and a note for each file left over."""
    groups: dict[tuple[Path, str], dict[str, list[Path]]] = defaultdict(lambda: {"nir": [], "rgb": []})
    for kind, root in (("nir", nir_root), ("rgb", rgb_root)):
        for path in find_images(root):
            rel = path.relative_to(root)
            groups[(rel.parent, rel.stem)][kind].append(path)
    return _pairs_of(groups, None, [], roots={"nir": nir_root, "rgb": rgb_root})


def _pairs_of(groups, folder: Path | None, notes: list[str], roots: dict[str, Path] | None = None):
    pairs: list[tuple[Path, Path]] = []
    for (_, name), found in sorted(groups.items(), key=lambda item: (item[0][0].as_posix(), item[0][1])):
        nir, rgb = found["nir"], found["rgb"]
        where = (lambda p, kind: _rel(p, folder)) if roots is None else (lambda p, kind: f"{kind}_root/{_rel(p, roots[kind])}")
        if len(nir) == 1 and len(rgb) == 1:
            pairs.append((nir[0], rgb[0]))
        elif len(nir) > 1 or len(rgb) > 1:
            many, kind = (nir, "nir") if len(nir) > 1 else (rgb, "rgb")
            # One note per file: the warning counts files and names what it counts.
            notes.extend(f"{where(p, kind)} (one of {len(many)} {kind.upper()} files of one scene)" for p in many)
        else:
            have, kind, missing = (nir[0], "nir", "RGB") if nir else (rgb[0], "rgb", "NIR")
            notes.append(f"{where(have, kind)} (no {missing} partner)")
    return pairs, notes


def _rel(path: Path, folder: Path | None) -> str:
    if folder is None:
        return path.name
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def report_unpaired(notes: list[str], where: str) -> None:
    if notes:
        log.warning("data: %s", unpaired_line(notes, where))


def unpaired_line(notes: list[str], where: str) -> str:
    named = "; ".join(notes[:_NAMED_UNPAIRED]) + (f"; and {len(notes) - _NAMED_UNPAIRED} more" if len(notes) > _NAMED_UNPAIRED else "")
    return f"{len(notes)} file(s) under {where} without a partner, not used: {named}"


def check_layout(root, nir_root, rgb_root) -> None:
    """One of the two layouts, whole: data.root, or data.nir_root with data.rgb_root
    (training's data=nir and evaluate take the same options)."""
    if (nir_root is None) != (rgb_root is None):
        raise ConfigError("data.nir_root and data.rgb_root go together: give both (or data.root=DIR of NAME_nir.* / NAME_rgb.* files)")
    if root is not None and nir_root is not None:
        raise ConfigError("NIR/RGB pairs: give data.root=DIR (NAME_nir.* next to NAME_rgb.*) or data.nir_root with data.rgb_root, not both")


def find_pairs(nir_folder: Path, rgb_folder: Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The pairs of one layout and the notes on files left over: NAME_nir.* next to
    NAME_rgb.* under `nir_folder` when there is no `rgb_folder`, else the same relative
    names under both folders."""
    if rgb_folder is None:
        return pair_side_by_side(nir_folder)
    return pair_folders(nir_folder, rgb_folder)


def no_pairs_message(notes: list[str], where: str, side_by_side: bool) -> str:
    """The one line for folders where nothing pairs up: it names a file, so the user
    sees which naming was expected of it."""
    left = f": {len(notes)} file(s) without a partner, e.g. {notes[0]}" if notes else ""
    layout = "NAME_nir.* next to NAME_rgb.*" if side_by_side else "the same file names in both folders"
    return f"data: no NIR/RGB pairs ({layout}) under {where}{left}"


@dataclass
class PairCheck:
    """What `check_pairs` made of a list of pairs."""

    kept: list[tuple[Path, Path]]
    left_out: list[tuple[Path, str, str]]  # (the file at fault, kind, why): a gray RGB, an NIR in colour, two sizes
    rgb_scan: ScanResult
    nir_scan: ScanResult  # its unreadable / unsupported files are NIR files that do not decode

    @property
    def unreadable(self) -> list[tuple[Path, str]]:
        """(path, reason) of every file of a pair that does not decode."""
        return self.rgb_scan.unreadable + self.rgb_scan.unsupported + self.nir_scan.unreadable + self.nir_scan.unsupported


def check_pairs(pairs: Sequence[tuple[Path, Path]]) -> PairCheck:
    """The pairs whose files decode (the scan of every data module), whose RGB is in
    colour, whose NIR is not, and whose two images have one size; training and
    evaluate both take exactly these."""
    rgb_scan = scan_color_images([rgb for _, rgb in pairs])
    nir_scan = scan_color_images([nir for nir, _ in pairs])
    good_rgb, gray_rgb = set(rgb_scan.good), set(rgb_scan.grayscale)
    gray_nir, colour_nir = set(nir_scan.grayscale), set(nir_scan.good)
    kept, left_out = [], []
    for nir, rgb in pairs:
        if (rgb not in good_rgb and rgb not in gray_rgb) or (nir not in gray_nir and nir not in colour_nir):
            continue  # a file that does not decode: the scans name it
        if rgb in gray_rgb:
            left_out.append((rgb, "gray RGB", "gray, where the colour photo is expected"))
        elif nir in colour_nir:
            left_out.append((nir, "NIR in colour", "NIR in colour"))
        elif _size(nir) != _size(rgb):
            left_out.append((nir, "sizes differ", f"{_size(nir)} px, its RGB partner {_size(rgb)} px"))
        else:
            kept.append((nir, rgb))
    return PairCheck(kept, left_out, rgb_scan, nir_scan)


def left_out_line(left_out: list[tuple[Path, str, str]], where: str) -> str:
    named = "; ".join(f"{p.name} ({why})" for p, _, why in left_out[:_NAMED_UNPAIRED])
    more = f"; and {len(left_out) - _NAMED_UNPAIRED} more" if len(left_out) > _NAMED_UNPAIRED else ""
    return f"{len(left_out)} pair(s) under {where} not used: {named}{more}"


def no_usable_message(checked: PairCheck, where: str) -> str:
    skipped = skipped_summary([(p, kind) for p, kind, _ in checked.left_out]
                              + [(p, UnreadableImage.kind) for p, _ in checked.unreadable])
    return f"data: no usable NIR/RGB pairs under {where} ({skipped or 'no files'})"


# -- the dataset -------------------------------------------------------------------------


class NIRDataset(_SkippingDataset):
    """NIR/RGB pairs -> {"nir": float32 (1, H, W) in [0, 1], "rgb": uint8 (3, H, W),
    "path": the NIR file}. The transform (built with paired=True) crops and flips both
    alike."""

    def __init__(
        self,
        pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
        transform: Transform | None = None,
        max_unreadable_share: float = DEFAULT_MAX_UNREADABLE_SHARE,
    ) -> None:
        super().__init__([nir for nir, _ in pairs], transform, max_unreadable_share)
        # By path, not position: a pair that turns unreadable is replaced by the next one.
        self.partners = {os.fspath(nir): os.fspath(rgb) for nir, rgb in pairs}

    def _item(self, path: str) -> dict[str, Any]:
        nir, rgb = load_nir(path), load_rgb(self.partners[path])
        if nir.shape != rgb.shape[:2]:
            raise UnreadableImage(path, f"NIR is {nir.shape[1]}x{nir.shape[0]} but its RGB partner is {rgb.shape[1]}x{rgb.shape[0]}")
        if self.transform is not None:
            # The NIR rides along as the paired target: same crop, same flip, kept float.
            out = self.transform(image=rgb, **{PAIRED_TARGET: nir})
            rgb, nir = out["image"], out[PAIRED_TARGET]
        return {"rgb": hwc_to_chw(rgb), "nir": torch.from_numpy(np.ascontiguousarray(nir))[None], "path": path}


# -- the data module ---------------------------------------------------------------------


class NIRDataModule(FolderDataModule):
    """NIR images and their colour photos (see the module docstring for the layouts).

    Batches carry "nir" (the input) and "rgb" (the target); `device_batch` hands a recipe
    {"nir": (N, 1, H, W) in [-1, 1], "rgb": (N, 3, H, W) sRGB in [0, 1]}.
    """

    input_kind = "nir"  # what a recipe must take as input (gancolor.models.base.check_input_kind)
    counted = "NIR/RGB pairs"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        nir_root: str | os.PathLike[str] | None = None,
        rgb_root: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        # The other options are FolderDataModule's (image_size, batch_size, ...).
        super().__init__(root, **options)
        check_layout(root, nir_root, rgb_root)
        self.nir_root, self.rgb_root = nir_root, rgb_root
        self._pairs: dict[str, str] = {}

    def device_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        return {
            "nir": color.nir_to_net(batch["nir"].to(device, non_blocking=True)),
            "rgb": color.uint8_to_float(batch["rgb"].to(device, non_blocking=True)),
        }

    def _resolved_root(self) -> Path:
        if self.root is None and self.nir_root is None:
            raise ConfigError("data=nir needs data.root=DIR (NAME_nir.* next to NAME_rgb.*) or data.nir_root=DIR data.rgb_root=DIR")
        if self.nir_root is None:
            return super()._resolved_root()
        for key in ("nir_root", "rgb_root"):
            problem = folder_problem(f"data.{key}", getattr(self, key))
            if problem:
                raise DataError(problem)
        return expand_folder(self.nir_root)

    def _split(self, root: Path) -> tuple[list[Path], list[Path]]:
        parts = self._subfolders(root)
        if parts is not None:
            train = self._usable_pairs(*parts[0])
            val = self._usable_pairs(*parts[1], required=False)
            if not val:
                log.warning("data: no usable NIR/RGB pairs under %s; validation is skipped", parts[1][0])
            return train, val
        train, val = seeded_split(self._usable_pairs(root, self._rgb_folder(root)), self.val_fraction, self.seed)
        return train, val

    def _subfolders(self, root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]] | None:
        """((nir, rgb) of train, (nir, rgb) of val) when the layout is split in subfolders."""
        rgb = self._rgb_folder(root)
        for name in self._val_dir_names:
            if all((base / sub).is_dir() for base in {root, rgb} for sub in ("train", name)):
                return (root / "train", rgb / "train"), (root / name, rgb / name)
        return None

    def _rgb_folder(self, root: Path) -> Path:
        return root if self.rgb_root is None else expand_folder(self.rgb_root)

    def _usable_pairs(self, nir_folder: Path, rgb_folder: Path, required: bool = True) -> list[Path]:
        """The NIR paths of the pairs under these folders that decode, with the RGB in
        colour, the NIR single-channel and both of one size (the rest said in the log)."""
        pairs, notes = find_pairs(nir_folder, None if self.nir_root is None else rgb_folder)
        where = str(nir_folder) if self.nir_root is None else f"{nir_folder} and {rgb_folder}"
        if not pairs:
            if not required:
                return []
            raise DataError(no_pairs_message(notes, where, side_by_side=self.nir_root is None))
        report_unpaired(notes, where)
        keep = self._cap_pairs(pairs)
        keep = self._scanned(keep, where)
        for nir, rgb in keep:
            self._pairs[os.fspath(nir)] = os.fspath(rgb)
        return [nir for nir, _ in keep]

    def _cap_pairs(self, pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        wanted = set(self._cap([nir for nir, _ in pairs]))
        return [pair for pair in pairs if pair[0] in wanted]

    def _scanned(self, pairs: list[tuple[Path, Path]], where: str) -> list[tuple[Path, Path]]:
        """The pairs check_pairs keeps, what it leaves out said in the log."""
        checked = check_pairs(pairs)
        # Counted in pairs, not in the colour images that report_scan counts for data=folder.
        for path, reason in checked.rgb_scan.unreadable + checked.rgb_scan.unsupported:
            log.warning("skipping unreadable image %s: %s", path, reason)
        for path, reason in checked.nir_scan.unreadable + checked.nir_scan.unsupported:
            log.warning("skipping unreadable NIR image %s: %s", path, reason)
        if checked.left_out:
            log.warning("data: %s", left_out_line(checked.left_out, where))
        if not checked.kept:
            raise DataError(no_usable_message(checked, where))
        log.info("data: %d usable NIR/RGB pairs under %s", len(checked.kept), where)
        return checked.kept

    def _make_dataset(self, paths: Sequence[Path], train: bool) -> _SkippingDataset:
        if train:
            transform = train_transform(self.image_size, (self.scale_min, 1.0), paired=True, resize_to=self.resize_to)
        else:
            transform = eval_transform(self.image_size, paired=True, resize_to=self.resize_to)
        return NIRDataset([(p, self._pairs[os.fspath(p)]) for p in paths], transform)


def _size(path: Path) -> str:
    """The size the image has once decoded upright (load_image applies the EXIF
    orientation), from its header: a pair stored one portrait, one landscape with a
    rotation tag is one size, and one that only matches before rotating is not."""
    with Image.open(path) as img:
        width, height = img.width, img.height
        try:
            orientation = img.getexif().get(_ORIENTATION_TAG, 1)
        except Exception:  # a corrupt EXIF block: decoding leaves the pixels as stored too
            orientation = 1
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    return f"{width}x{height}"


_ORIENTATION_TAG = 0x0112
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
