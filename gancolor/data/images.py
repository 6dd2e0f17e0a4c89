"""Finding, decoding and vetting image files.

Everything that touches an image file on disk goes through `load_rgb` (training,
scanning, evaluation) or `load_image` (colourising real photos), so they agree on what
a file looks like: EXIF orientation applied, any PIL mode turned into 8-bit RGB (or,
for `load_image`, gray kept as gray at its bit depth and alpha kept apart), and every
way a file can be broken reported as one `UnreadableImage` naming the file. No
colour-space maths happens here beyond "make it RGB"; Lab lives in gancolor.color.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from gancolor.errors import DataError

log = logging.getLogger("gancolor.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# Files that sit beside photos and are obviously not images: a folder scan passes over
# them without a word. Any other file is tried, and Pillow decides by its content
# (GIF, JPEG 2000, PPM/PGM, TGA, ... are as welcome as JPEG); one it cannot read is
# counted and named in the summary.
QUIET_EXTENSIONS: frozenset[str] = frozenset({
    ".txt", ".md", ".rst", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".csv", ".tsv",
    ".xml", ".html", ".htm", ".log", ".py", ".ipynb", ".sh", ".db", ".sqlite",
    ".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".h5", ".hdf", ".npy", ".npz", ".pkl",
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z",
    ".xmp", ".aae", ".thm",  # camera and editor sidecar files
    ".mp4", ".mov", ".avi", ".mkv", ".mpg", ".mpeg", ".mp3", ".wav",
})

# A colour photo, even a washed-out one, has pixels whose channels differ by far more
# than this after downsampling; a grayscale photo stored as RGB differs by 0-2 (JPEG
# chroma rounding), and by a few levels more when it went through a colour-managed
# editor or a colour scanner. Sepia- or cyan-toned prints usually exceed it and count
# as colour: pass a larger tolerance to treat them as grayscale.
GRAY_TOLERANCE = 12

# Box-averaging to about this many pixels on the long side removes per-pixel noise
# (JPEG ringing at edges, scanner grain: sigma 4 per channel on a 512 px photo
# peaks at a spread of ~14 unaveraged, ~6 here) yet keeps small coloured objects
# (a few galaxies in a dark sky still spread > 100) far above the tolerance.
_GRAY_CHECK_SIDE = 128

# PIL errors for bad files are spread over several types: OSError (truncated, cannot
# identify), SyntaxError (bad headers in some plugins), ValueError/struct.error (bad
# sizes or tags), DecompressionBombError (absurd dimensions), EOFError (short files).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class UnreadableImage(DataError):
    """An image file that cannot be decoded (empty, truncated, corrupt, not an image)."""

    kind = "unreadable"  # how summaries count it

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"unreadable image {self.path}: {reason}")


class UnsupportedFormat(UnreadableImage):
    """A file that Pillow does not recognise and whose name does not claim an image
    (a.xyz, a PDF, a HEIC without its plugin): passed over and counted, not an error."""

    kind = "unsupported format"


def may_be_image(path: str | os.PathLike[str]) -> bool:
    """False for hidden files and obvious non-images (QUIET_EXTENSIONS); every other
    file may be an image, which only its content can tell."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() not in QUIET_EXTENSIONS


def image_extensions() -> frozenset[str]:
    """Extensions of the formats this Pillow can open: a file named so that fails to
    decode is an unreadable image, not merely an unsupported format."""
    Image.init()
    return frozenset(
        ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and ext not in QUIET_EXTENSIONS
    ) | IMAGE_EXTENSIONS


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every file under `root` that may be an image (see `may_be_image`), recursively,
    sorted; hidden files and folders skipped. Whether each one is an image is for its
    decoder to say (the scan, colorize's plan), which counts the ones that are not.

    Symlinked folders are followed (datasets are often assembled from links) but each
    real folder is visited once, so a link cycle cannot loop forever. A single file as
    `root` (hidden or not) gives a one-element list, so callers can accept file or folder.
    """
    root = Path(root)
    if root.is_file():
        # Named explicitly, so a hidden name is what the caller wants.
        return [root] if Path(root.name.lstrip(".")).suffix.lower() not in QUIET_EXTENSIONS else []
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(folder, name)
            # A pipe or a device would block the decoder that opens it; a dangling link
            # stays, to be reported as missing.
            if may_be_image(name) and (path.is_file() or not path.exists()):
                found.append(path)
    # Sorting the strings rather than the walk order makes the result independent of
    # the filesystem, which the seeded train/val split relies on.
    return sorted(found, key=lambda p: p.as_posix())


def load_rgb(
    path: str | os.PathLike[str], max_side: int | None = None, min_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array, upright per its EXIF tag.

    `max_side` asks for a small version (long side at most `max_side`, aspect kept):
    JPEGs are then decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, which is what
    makes scanning a large folder fast. The whole file is still decoded, so truncation
    is detected either way. An animated file gives its first frame. Raises
    UnreadableImage (UnsupportedFormat for a file Pillow does not know) naming the file.

    `min_side` (training loaders): a JPEG at least twice that on its short side is
    decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps its short side at least
    `min_side`: a 12 MP photo cropped to 256 px costs a fraction of its full decode.

    `max_pixels` refuses a larger image from its header (ImageTooLarge), as load_image.
    """
    return load_first_frame(path, max_side, min_side, max_pixels)[0]


def load_first_frame(
    path: str | os.PathLike[str], max_side: int | None = None, min_side: int | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, bool]:
    """`load_rgb`, and whether the file holds more frames than the one returned."""
    path = Path(path)
    try:
        with open_image(path, max_pixels) as img:
            animated = _is_animated(img)
            if max_side is not None:
                img.draft(img.mode, (max_side, max_side))
            elif min_side is not None and img.format == "JPEG" and min(img.size) >= 2 * min_side:
                # draft picks the strongest reduction whose size is at least the one asked.
                shrink = min(img.size) / min_side
                img.draft(img.mode, (int(img.size[0] / shrink) + 1, int(img.size[1] / shrink) + 1))
            # Image.open only reads the header; load() forces the full decode, so a
            # truncated file fails here and not later inside a DataLoader worker.
            img.load()
            img = _upright(img)
            if max_side is not None:
                img.thumbnail((max_side, max_side), Image.Resampling.BOX)
            return to_rgb_array(img), animated
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a folder") from None
    except UnreadableImage:
        raise
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(path, _reason(exc)) from exc


def open_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Image.open, with the two ways a file is not an image told apart: a name that
    claims an image format (UnreadableImage) and one that does not (UnsupportedFormat).

    The one place where an image's size is checked, from its header, before anything is
    decoded: over `max_pixels` (the caller's limit), or over the limit Pillow keeps
    against decompression bombs (see `allow_large_images`), it is an ImageTooLarge that
    gives the size and the limit. Pillow's own guard stays on for what only decoding
    finds (a TIFF's tiles, a GIF's later frames)."""
    if path.stat().st_size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        img = Image.open(path)
    except Image.UnidentifiedImageError:
        if path.suffix.lower() in image_extensions():
            raise UnreadableImage(path, "not an image file (or a format PIL cannot read)") from None
        raise UnsupportedFormat(path, f"not a format Pillow reads ({path.suffix.lower() or 'no extension'})") from None
    except Image.DecompressionBombError:
        # Pillow refuses a header over twice its limit inside Image.open, before the
        # caller's own limit could be checked: read the size again without that check
        # (the header only) so the file is reported as too large like any other.
        raise ImageTooLarge(path, _too_large_reason(_header_size(path), max_pixels)) from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageTooLarge(path, _too_large_reason((width, height), max_pixels))
    return img


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header by the plugin that accepts it, as Image.open
    finds it but without Pillow's decompression-bomb check; None if none reads it."""
    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            accepted = accept is None or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str: Pillow's "almost this format" warning
                continue
            try:
                fp.seek(0)
                return factory(fp, str(path)).size
            except Exception:  # noqa: BLE001 - plugins raise many types on headers they do not read
                continue
    return None


def _too_large_reason(size: tuple[int, int] | None, max_pixels: int | None) -> str:
    if max_pixels is not None:
        limit = f"the limit of {max_pixels / 1e6:g} MP (max_pixels)"
    else:
        limit = f"the limit of {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP that is decoded safely"
    if size is None:
        return f"over {limit}"
    width, height = size
    return f"{width}x{height} = {width * height / 1e6:.1f} MP is over {limit}"


def allow_large_images(max_pixels: int | None) -> None:
    """Pillow's decompression-bomb limit out of the way of a command's own max_pixels
    (None: no limit). Process-wide, as Pillow's limit is."""
    # Pillow warns above MAX_IMAGE_PIXELS and refuses twice that; max_pixels is the
    # limit the user chose, checked from the header in open_image, so Pillow's warning
    # must not fire below it. Its refusal stays, at twice the larger of the two, as the
    # guard for sizes only decoding finds (TIFF tiles, later GIF frames).
    import warnings

    Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def check_format(path: str | os.PathLike[str]) -> None:
    """Raise UnsupportedFormat for a file that Pillow cannot identify from its header
    (cheap: nothing is decoded). Every other problem is left to decoding to report."""
    path = Path(path)
    try:
        open_image(path).close()
    except UnsupportedFormat:
        raise
    except (UnreadableImage, *_DECODE_ERRORS):
        pass


def quiet_pillow_warnings() -> None:
    """Stop Pillow's warnings about damaged files (corrupt EXIF, a short TIFF strip)
    reaching the user: such a file either decodes, or fails with a reason that the
    caller reports on one line. Process-wide: the decoders run in worker threads."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")


def _is_animated(img: Image.Image) -> bool:
    # Asked before load(): finding a second frame seeks, and seeking back to the first
    # frame after decoding it would decode it again.
    try:
        return bool(getattr(img, "is_animated", False))
    except _DECODE_ERRORS:  # a cut-off file: its decoding says so
        return False


def _reason(exc: BaseException) -> str:
    """A short reason; PIL's 'cannot identify image file <path>' repeats the path."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file (or a format PIL cannot read)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large to decode safely ({exc})"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def skipped_summary(skipped: Sequence[tuple[Path, str]], named: int = 3) -> str:
    """ "3 files skipped: 2 unreadable, 1 unsupported format: a.xyz" for (path, kind)
    pairs, in order of first appearance; files of an unsupported format are named
    (each unreadable one had a line of its own). '' when nothing was skipped."""
    if not skipped:
        return ""
    kinds: dict[str, list[Path]] = {}
    for path, kind in skipped:
        kinds.setdefault(kind, []).append(Path(path))
    parts = []
    for kind, paths in kinds.items():
        part = f"{len(paths)} {kind}"
        if kind == UnsupportedFormat.kind:
            names = ", ".join(p.name for p in paths[:named])
            part += f": {names}" + (f" and {len(paths) - named} more" if len(paths) > named else "")
        parts.append(part)
    return f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: " + ", ".join(parts)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a corrupt EXIF block leaves the pixels as stored.

    Phones store portrait shots as landscape pixels plus an orientation tag; ignoring
    it would train on (and colourise) sideways photos. Broken EXIF is common enough in
    the wild that it should not make an otherwise fine photo unusable.
    """
    try:
        return ImageOps.exif_transpose(img)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error) as exc:
        log.debug("ignoring unreadable EXIF orientation in %s: %s", getattr(img, "filename", "?"), exc)
        return img


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB. Alpha is dropped, not composited."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _high_depth_gray_to_uint8(np.asarray(img), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        # Converting a palette image with a transparent index straight to RGB makes
        # PIL warn; going through RGBA is the route it recommends.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError as exc:
            raise UnreadableImage(getattr(img, "filename", "?"), f"unsupported image mode {mode}") from exc
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _high_depth_gray_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float grayscale -> uint8 spanning the same range.

    PIL's own "I;16" -> "L" conversion clips at 255 in some versions instead of
    scaling, which turns a 16-bit scan almost white. "I;16*" is 16-bit by definition.
    "I" carries no bit depth: it holds 16-bit data (old Pillow PNG reader, PGM, TIFF)
    far more often than 32-bit, so values up to 255 are taken as 8-bit and anything
    larger as 16-bit (clipped). "F" is read as [0, 1] unless it exceeds 1.
    """
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode.startswith("I;16"):
        full_scale = 65535.0
    elif mode == "I":
        full_scale = 255.0 if peak <= 255 else 65535.0
    else:
        full_scale = 1.0 if peak <= 1.0 else 255.0
    scaled = np.clip(values, 0.0, full_scale) * (255.0 / full_scale)
    return np.rint(scaled).astype(np.uint8)


def is_grayscale(rgb: np.ndarray, tolerance: int = GRAY_TOLERANCE) -> bool:
    """True when an RGB image carries (almost) no colour.

    The test is the largest per-pixel channel spread, max(R, G, B) - min(R, G, B), on
    a copy box-averaged to about 128 px on the long side, compared with `tolerance`
    (uint8 levels; GRAY_TOLERANCE documents the default). Averaging first makes it
    robust to JPEG noise and grain, which is zero-mean per channel; the maximum (not a
    mean) keeps photos that are mostly neutral but have some colour. (H, W) and
    (H, W, 1) arrays are grayscale by construction.
    """
    if rgb.ndim == 2 or rgb.shape[-1] == 1:
        return True
    small = _box_downsample(np.asarray(rgb[..., :3], dtype=np.uint8), _GRAY_CHECK_SIDE)
    spread = small.max(axis=2).astype(np.int16) - small.min(axis=2)
    return int(spread.max(initial=0)) <= tolerance


def _box_downsample(rgb: np.ndarray, side: int) -> np.ndarray:
    """Average integer blocks so the long side is at most about `side` pixels."""
    factor = -(-max(rgb.shape[:2]) // side)
    if factor <= 1:
        return rgb
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(factor))


def truncated_images_allowed() -> bool:
    """Whether some imported library has switched PIL to accept truncated files.

    PIL's flag is process-global; gancolor never sets it, but if anything else does,
    a cut-off download would decode to a half-grey photo without an error.
    """
    return bool(ImageFile.LOAD_TRUNCATED_IMAGES)


# -- full-fidelity decoding for colourisation ----------------------------------------

_ORIENTATION_TAG = 0x0112


class ImageTooLarge(UnreadableImage):
    """An image with more pixels than the caller's limit (checked before decoding)."""

    kind = "too large"


@dataclass
class DecodedImage:
    """An upright image as `load_image` hands it over.

    pixels: (H, W) uint8 or uint16 gray, or (H, W, 3) uint8 RGB. Gray files stay gray so
        a 16-bit scan keeps its depth; colour files are RGB whatever they were stored as
        (palette, CMYK, YCbCr...).
    alpha: (H, W) uint8, or None when the file has no transparency.
    exif: the file's EXIF block without its orientation tag (the pixels are already
        upright, so a kept tag would rotate them a second time), or None.
    animated: whether the file holds more frames; the pixels are the first one's.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    exif: bytes | None = None
    animated: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.pixels.shape[0], self.pixels.shape[1]


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> DecodedImage:
    """Decode an image file at full resolution for colourisation, upright per EXIF.

    Unlike `load_rgb` (which feeds training), gray stays gray at 8 or 16 bits, alpha
    is returned separately instead of being dropped, and the EXIF block is kept
    (minus orientation) for the output file. `max_pixels` rejects an image from its
    header alone, before any memory is spent on decoding it. Raises UnreadableImage
    (ImageTooLarge for the limit) naming the file.
    """
    path = Path(path)
    try:
        with open_image(path, max_pixels) as img:
            animated = _is_animated(img)
            img.load()
            exif = _exif_without_orientation(img)
            img = _upright(img)
            decoded = _split_for_colorize(img, path, exif)
            decoded.animated = animated
            return decoded
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a folder") from None
    except UnreadableImage:
        raise
    except _DECODE_ERRORS as exc:
        raise UnreadableImage(path, _reason(exc)) from exc


def _exif_without_orientation(img: Image.Image) -> bytes | None:
    # Camera, date and GPS tags are worth carrying over; a broken EXIF block is not
    # worth failing a photo for, so it is simply not copied. Parsed into a new Exif
    # object: editing img.getexif() would change what exif_transpose then reads. Only
    # a real EXIF block (JPEG, PNG, WebP) is taken: a TIFF's own tags describe its
    # strips and compression, not the photo.
    raw = img.info.get("exif")
    if not raw:
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
        exif.pop(_ORIENTATION_TAG, None)
        return exif.tobytes() if len(exif) else None
    except Exception:  # noqa: BLE001 - PIL's EXIF parser raises many types on bad data
        return None


def _split_for_colorize(img: Image.Image, path: Path, exif: bytes | None) -> DecodedImage:
    # Transparency arrives in several guises: an alpha band (RGBA, LA, PA, and the
    # premultiplied RGBa, La) or a transparent palette index / gray level in info.
    mode = img.mode
    if mode in ("RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    elif mode == "La" or (mode == "L" and "transparency" in img.info):
        img = img.convert("LA")
    alpha = None
    if img.mode in ("RGBA", "LA"):
        alpha = np.array(img.getchannel("A"), dtype=np.uint8)
        img = img.convert("L" if img.mode == "LA" else "RGB")
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        pixels = _high_depth_gray(np.asarray(img), mode)
    elif mode in ("1", "L"):
        pixels = np.asarray(img.convert("L"), dtype=np.uint8)
    else:
        try:
            pixels = np.asarray(img if mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
        except ValueError as exc:
            raise UnreadableImage(path, f"unsupported image mode {mode}") from exc
    return DecodedImage(np.ascontiguousarray(pixels), alpha, exif)


def _high_depth_gray(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float gray -> uint16 (or uint8 when the data is 8-bit).

    Same reading of the range as `_high_depth_gray_to_uint8`, without its float64 copy
    of the whole image and without throwing away the low byte of a 16-bit scan.
    """
    if mode.startswith("I;16"):
        return values.astype(np.uint16, copy=False)
    peak = float(values.max()) if values.size else 0.0
    if mode == "I":
        if peak <= 255:
            return np.clip(values, 0, 255).astype(np.uint8)
        return np.clip(values, 0, 65535).astype(np.uint16)
    full_scale = 1.0 if peak <= 1.0 else 255.0
    scaled = np.clip(values.astype(np.float32, copy=False), 0.0, full_scale) * np.float32(65535.0 / full_scale)
    return np.rint(scaled).astype(np.uint16)
