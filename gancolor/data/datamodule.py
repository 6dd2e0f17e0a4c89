"""The base of every data module (what `data=` builds): folder -> loaders of uint8 RGB.

    FolderDataModule    a folder of colour photos, split into train/val (data=folder);
                        every other data module extends it
    SampleDataModule    a handful of scikit-image photos, for trying things out offline
                        (data=sample)
    SampleRootFallback  mixin: `root=None` means those sample photos
                        (data=unpaired, data=domains)

and what the families share: the seeded split, the sample/folder defaults, the scan
that keeps gray images, `lab_batch` and the loaders' worker seeding.

Building one is cheap (Hydra instantiates it before anything else is checked); the
folder is scanned on first use, in `setup()`. Batches are dicts of uint8 tensors;
`lab_batch` turns one into the normalised (L, ab) the models train on, on the device.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from gancolor import color
from gancolor.config_check import expand_folder, folder_problem
from gancolor.data.datasets import DEFAULT_MAX_UNREADABLE_SHARE, ColorImageDataset, _SkippingDataset
from gancolor.data.images import find_images, skipped_summary, truncated_images_allowed
from gancolor.data.sampling import EpochSampler
from gancolor.data.scan import ScanResult, scan_color_images
from gancolor.data.transforms import PAIRED_TARGET, eval_transform, train_transform
from gancolor.errors import ConfigError, DataError
from gancolor.hints import HintPlanDataset, hint_maps

log = logging.getLogger("gancolor.data")

_EXTENSIONS_HINT = "any format Pillow reads"


def lab_batch(batch: dict[str, Any], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch -> normalised (L, ab) on `device`, as the trainer consumes it.

    ab always comes from the colour target "rgb". L comes from "input_rgb" when the
    batch has one (aligned pairs, where the input is a separate photo), else from
    "rgb" itself (the usual case: the model sees the target's own lightness).
    """
    L, ab = color.batch_to_lab(batch["rgb"], device)
    if PAIRED_TARGET in batch:
        L = color.batch_to_lab(batch[PAIRED_TARGET], device)[0]
    return L, ab


def init_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: stop signals are the training process's to handle,
    then `seed_worker`.

    Ctrl-C and a scheduler's or torchrun's SIGTERM reach the whole process group, loader
    workers included. A worker killed by one makes torch raise in the training process
    from its SIGCHLD handler, at any point of a step: the run then crashed, or saved a
    half-done step (a generator forward's BatchNorm statistics without its optimiser
    step), and its resume was not exact. Ignoring them here, the trainer finishes the
    step, saves, and the loader ends its workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a signal pending since the fork is dropped
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by WorkerLoader.__iter__
    seed_worker(worker_id)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class WorkerLoader(DataLoader):
    """A DataLoader whose workers start with the stop signals blocked (init_worker ignores
    and unblocks them). Between its fork and worker_init_fn a worker runs torch's own
    SIGTERM handler, which dies of a signal its parent did not send: a torchrun SIGTERM
    that came while a loader started its workers (the first epoch, a validation) killed
    one, and the training process failed with "DataLoader worker exited unexpectedly".
    The training process gets a signal that came meanwhile once they have started."""

    def __iter__(self):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive every RNG a worker uses from its torch seed.

    torch.initial_seed() in a worker is the loader's base seed (drawn from the
    loader's torch.Generator) plus the worker id, so seeding from it makes
    augmentation reproducible and different across workers. Without reseeding,
    forked workers share one copied augmentation state and repeat each other's crops.
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    reseed = getattr(info.dataset, "reseed", None) if info is not None else None
    if reseed is not None:
        reseed(seed)
    # The loader's processes are the parallelism: OpenCV's own thread pool (albumentations'
    # resizes) in each of them would only oversubscribe the cores.
    import cv2

    cv2.setNumThreads(0)


# data.num_workers=auto: one core stays with the training process, and past 8 workers a
# JPEG pipeline at 256 px outruns one GPU anyway.
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, a cluster's cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str) -> int:
    """data.num_workers: a count, or "auto" (cores - 1, at most MAX_AUTO_WORKERS)."""
    if str(value) == "auto":
        return max(0, min(available_cores() - 1, MAX_AUTO_WORKERS))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.num_workers: must be a number or auto, got {value!r}") from None


class FolderDataModule:
    """Colour photos under `root`: train on most, validate on a seeded held-out part.

    If `root` has `train/` and `val/` subfolders they are the split; otherwise all
    images under `root` are split by `seed` (`val_fraction` of them, at least one when
    there are two or more). `max_images` caps how many images are used, for quick
    runs (each of train/ and val/ when those exist). `repeats` makes one epoch that
    many shuffled passes over the training images: a set of a few photos gives epochs
    long enough to be worth a validation and a checkpoint. Grayscale and unreadable
    files are dropped by a scan in `setup()`, which runs once, on first use.
    """

    _val_dir_names: tuple[str, ...] = ("val",)

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int | str = 2,
        val_fraction: float = 0.1,
        seed: int = 0,
        scale_min: float = 0.5,
        max_images: int | None = None,
        repeats: int = 1,
        resize_to: int | None = None,
        max_unreadable_share: float = DEFAULT_MAX_UNREADABLE_SHARE,
        prefetch_factor: int = 4,
    ) -> None:
        num_workers = resolve_num_workers(num_workers)
        if int(prefetch_factor) < 1:
            raise ConfigError(f"data.prefetch_factor: must be at least 1, got {prefetch_factor}")
        # Batches each worker prepares ahead: enough to ride out a slow (large) photo.
        self.prefetch_factor = int(prefetch_factor)
        _check_options(image_size, batch_size, num_workers, val_fraction, scale_min, max_images)
        if not 0.0 <= float(max_unreadable_share) <= 1.0:
            raise ConfigError(f"data.max_unreadable_share: must be in [0, 1], got {max_unreadable_share}")
        # How many images may go bad after the scan (deleted, truncated) before the run stops.
        self.max_unreadable_share = float(max_unreadable_share)
        if int(repeats) < 1:
            raise ConfigError(f"data.repeats: must be at least 1, got {repeats}")
        self.repeats = int(repeats)
        if resize_to is not None and int(resize_to) < int(image_size):
            raise ConfigError(f"data.resize_to ({resize_to}) must be at least data.image_size ({image_size})")
        self.resize_to = None if resize_to is None else int(resize_to)
        self.root = root
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.scale_min = float(scale_min)
        self.max_images = None if max_images is None else int(max_images)
        self._train: _SkippingDataset | None = None
        self._val: _SkippingDataset | None = None

    counted = "images"  # what one training example is, in the log

    # -- public API -------------------------------------------------------------

    def setup(self) -> None:
        """Find, scan and split the images; later calls do nothing."""
        if self._train is not None:
            return
        root = self._resolved_root()
        train_paths, val_paths = self._split(root)
        self._train = self._make_dataset(train_paths, train=True)
        self._val = self._make_dataset(val_paths, train=False)
        log.info("data: %d training and %d validation %s from %s", len(train_paths), len(val_paths), self.counted, root)

    @property
    def train_size(self) -> int:
        return len(self._datasets()[0])

    @property
    def val_size(self) -> int:
        return len(self._datasets()[1])

    @property
    def train_paths(self) -> list[str]:
        return list(self._datasets()[0].paths)

    @property
    def val_paths(self) -> list[str]:
        return list(self._datasets()[1].paths)

    def train_loader(self, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Shuffled, augmented batches; the order and every crop are a function of
        (seed, epoch) only (see EpochSampler): call `loader.sampler.set_epoch(epoch,
        start)` before each epoch. Under DDP each rank gets a disjoint shard.
        """
        dataset = self._with_hint_plans(self._datasets()[0])
        sampler = EpochSampler(len(dataset), self.seed, self.repeats, rank=rank, world_size=world_size)
        return WorkerLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # Dropping the ragged last batch keeps BatchNorm away from batches of one,
            # but a set smaller than a batch must still yield something.
            drop_last=len(sampler) >= self.batch_size,
            **self._loader_options(),
        )

    def device_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
        """A collated training batch -> what a recipe's steps receive, on the device."""
        L, ab = lab_batch(batch, device)
        out = {"L": L, "ab": ab}
        if "hint_plan" in batch:
            out["hints"] = hint_maps(ab, batch["hint_plan"])
        return out

    # -- user hints (model.hints) ---------------------------------------------------

    def simulate_hints(self, simulation) -> None:
        """Training batches carry hint plans drawn by `simulation` (gancolor.hints), and
        `device_batch` turns them into hint maps ("hints") from the batch's own ab."""
        self._hint_simulation = simulation

    def _with_hint_plans(self, dataset):
        simulation = getattr(self, "_hint_simulation", None)
        return dataset if simulation is None else HintPlanDataset(dataset, simulation)

    def val_loader(self) -> DataLoader:
        """Center-cropped batches in a fixed order (every image, last batch may be short)."""
        return WorkerLoader(self._datasets()[1], batch_size=self.batch_size, shuffle=False, **self._loader_options())

    # -- overridable steps --------------------------------------------------------

    def _make_dataset(self, paths: Sequence[Path], train: bool) -> _SkippingDataset:
        if train:
            return ColorImageDataset(paths, train_transform(self.image_size, (self.scale_min, 1.0), resize_to=self.resize_to))
        return ColorImageDataset(paths, eval_transform(self.image_size, resize_to=self.resize_to))

    # -- internals ----------------------------------------------------------------

    def _datasets(self) -> tuple[_SkippingDataset, _SkippingDataset]:
        self.setup()
        assert self._train is not None and self._val is not None
        for dataset in (self._train, self._val):  # every family's datasets, however built
            dataset.set_max_unreadable_share(self.max_unreadable_share)
            if hasattr(dataset, "set_decode_min_side"):
                dataset.set_decode_min_side(self.decode_min_side())
        return self._train, self._val

    def _loader_options(self) -> dict[str, Any]:
        workers = self.num_workers
        # A loader without its own generator draws its workers' base seed from the
        # global torch RNG each epoch, which would shift the training RNG stream.
        generator = torch.Generator().manual_seed(self.seed)
        return {
            "generator": generator,
            "num_workers": workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
            "worker_init_fn": init_worker if workers > 0 else None,
            **({"prefetch_factor": self.prefetch_factor} if workers > 0 else {}),
        }

    def decode_min_side(self) -> int:
        """The short side a photo needs so that no crop of it is upsampled: the smallest
        random crop (scale_min of the area, aspect 3:4) covers image_size, or the whole
        image is first resized to resize_to. Larger JPEGs are decoded reduced to it."""
        crop = self.image_size / math.sqrt(self.scale_min * 0.75)
        return math.ceil(max(crop, self.resize_to or 0))

    def _resolved_root(self) -> Path:
        problem = folder_problem("data.root", self.root)
        if problem:
            raise DataError(problem)
        return expand_folder(self.root)

    def _presplit_dirs(self, root: Path) -> tuple[Path, Path] | None:
        train = root / "train"
        if not train.is_dir():
            return None
        for name in self._val_dir_names:
            if (root / name).is_dir():
                return train, root / name
        return None

    def _split(self, root: Path) -> tuple[list[Path], list[Path]]:
        presplit = self._presplit_dirs(root)
        if presplit is not None:
            train_dir, val_dir = presplit
            train_candidates = self._cap(find_images(train_dir))
            val_candidates = self._cap(find_images(val_dir))
            if not train_candidates:
                raise DataError(f"data.root: no images ({_EXTENSIONS_HINT}) under {train_dir}")
            scan = self._scan(train_candidates + val_candidates, root)
            keep = set(scan.good)
            train = [p for p in train_candidates if p in keep]
            val = [p for p in val_candidates if p in keep]
            if not train:
                raise DataError(f"data.root: no usable colour images under {train_dir} ({_skipped(scan)})")
            if not val:
                log.warning("data: no usable colour images under %s; validation is skipped", val_dir)
            return train, val
        candidates = self._cap(find_images(root))
        if not candidates:
            raise DataError(f"data.root: no images ({_EXTENSIONS_HINT}) under {root}")
        return seeded_split(self._scan(candidates, root).good, self.val_fraction, self.seed)

    def _cap(self, paths: list[Path]) -> list[Path]:
        """A seeded subset of at most max_images paths (scanning only those)."""
        if self.max_images is None or len(paths) <= self.max_images:
            return paths
        order = np.random.default_rng(self.seed).permutation(len(paths))[: self.max_images]
        return sorted((paths[i] for i in order), key=lambda p: p.as_posix())

    def _scan(self, paths: list[Path], root: Path) -> ScanResult:
        if truncated_images_allowed():
            log.warning("data: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated files will not be detected")
        log.info("data: scanning %d images under %s", len(paths), root)
        scan = scan_color_images(paths)
        report_scan(scan)
        if not scan.good:
            raise DataError(f"data.root: no usable colour images under {root} ({_skipped(scan)})")
        return scan


class SampleDataModule(FolderDataModule):
    """A few colour photographs bundled with scikit-image: a dataset that needs no
    download, for smoke tests and first runs.

    The photos are written once as PNGs to `cache_dir` (default:
    $GANCOLOR_CACHE/sample if that variable is set, else ~/.cache/gancolor/sample),
    and from then on this is FolderDataModule on that folder.
    """

    def __init__(
        self,
        image_size: int = 128,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.25,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        scale_min: float = 0.5,
        max_images: int | None = None,
        repeats: int = 1,
        resize_to: int | None = None,
        max_unreadable_share: float = DEFAULT_MAX_UNREADABLE_SHARE,
    ) -> None:
        super().__init__(
            root=sample_cache_dir(cache_dir),
            repeats=repeats,
            resize_to=resize_to,
            max_unreadable_share=max_unreadable_share,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            seed=seed,
            scale_min=scale_min,
            max_images=max_images,
        )

    def setup(self) -> None:
        if self._train is None:
            write_sample_photos(Path(self.root))
        super().setup()


class SampleRootFallback:
    """For FolderDataModule subclasses: `root=None` means the bundled sample photos, written
    once to `cache_dir` (default as SampleDataModule's), so the model's own data group runs
    out of the box."""

    root: Any
    cache_dir: Any

    def _resolved_root(self) -> Path:
        if self.root is None:
            folder = sample_cache_dir(self.cache_dir)
            write_sample_photos(folder)
            return folder
        return super()._resolved_root()  # type: ignore[misc]


# -- helpers --------------------------------------------------------------------------


def seeded_split(paths: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic train/val split: the same files and seed give the same split,
    whatever order the filesystem listed them in. Both parts come back sorted."""
    ordered = sorted(paths, key=lambda p: p.as_posix())
    n = len(ordered)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(ordered) if i not in val_idx]
    val = [p for i, p in enumerate(ordered) if i in val_idx]
    return train, val


# On the handful of sample photos an epoch must be several passes and a quarter is held
# out (as data=sample); on a real folder one pass and a tenth.
SAMPLE_DEFAULTS = {"val_fraction": 0.25, "repeats": 6}
FOLDER_DEFAULTS = {"val_fraction": 0.1, "repeats": 1}


def defaults_for(root: Any, val_fraction: float | None, repeats: int | None) -> tuple[float, int]:
    """Fill null val_fraction / repeats with the sample or folder defaults."""
    preset = SAMPLE_DEFAULTS if root is None else FOLDER_DEFAULTS
    return (
        preset["val_fraction"] if val_fraction is None else float(val_fraction),
        preset["repeats"] if repeats is None else int(repeats),
    )


def readable_images(paths: list[Path], where: Path) -> list[Path]:
    """The decodable files among `paths`, gray or colour (unreadable ones are logged)."""
    scan = scan_color_images(paths)
    report_scan(scan, gray_wanted=True)
    keep = set(scan.good) | set(scan.grayscale)
    readable = [p for p in paths if p in keep]
    if not readable:
        raise DataError(f"data.root: no readable images under {where} ({_skipped(scan)})")
    return readable


def report_scan(scan: ScanResult, gray_wanted: bool = False) -> None:
    """Each unreadable file once (warning), then the counts on one line, and the
    animated files (first frame used) on one line of their own."""
    for path, reason in scan.unreadable:
        log.warning("skipping unreadable image %s: %s", path, reason)
    if gray_wanted:
        kept = len(scan.good) + len(scan.grayscale)
        skipped = skipped_summary([s for s in scan.skipped if s[1] != "grayscale"])
        log.info("data: %d images%s", kept, f"; {skipped}" if skipped else "")
    else:
        log.info("data: %s", scan.summary())
    if scan.animated:
        names = ", ".join(p.name for p in scan.animated[:3]) + (", ..." if len(scan.animated) > 3 else "")
        log.info("data: %d animated image(s) (%s): the first frame of each is used", len(scan.animated), names)


def _skipped(scan: ScanResult) -> str:
    return skipped_summary(scan.skipped) or "no files"


def _check_options(
    image_size: int, batch_size: int, num_workers: int, val_fraction: float, scale_min: float, max_images: int | None
) -> None:
    checks: list[tuple[bool, str]] = [
        (image_size >= 1, f"data.image_size: must be a positive number of pixels, got {image_size}"),
        (batch_size >= 1, f"data.batch_size: must be at least 1, got {batch_size}"),
        (num_workers >= 0, f"data.num_workers: must be 0 or more, got {num_workers}"),
        (0.0 <= val_fraction < 1.0, f"data.val_fraction: must be in [0, 1), got {val_fraction}"),
        (0.0 < scale_min <= 1.0, f"data.scale_min: must be in (0, 1], got {scale_min}"),
        (max_images is None or max_images >= 1, f"data.max_images: must be at least 1 or null, got {max_images}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# -- the bundled sample photos -------------------------------------------------------

# Real colour photographs that ship inside the scikit-image wheel (no download):
# portrait, cat, still life, outdoor scene, street scene, astronomy, microscopy,
# medical imaging. Synthetic images (colorwheel, logo) would teach nothing about photos;
# chelsea and cat are the same photo; motorcycle's right view nearly duplicates the left.
SAMPLE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": lambda: _skimage_data().astronaut(),
    "chelsea": lambda: _skimage_data().chelsea(),
    "coffee": lambda: _skimage_data().coffee(),
    "rocket": lambda: _skimage_data().rocket(),
    "motorcycle": lambda: _skimage_data().stereo_motorcycle()[0],
    "hubble_deep_field": lambda: _skimage_data().hubble_deep_field(),
    "immunohistochemistry": lambda: _skimage_data().immunohistochemistry(),
    "retina": lambda: _skimage_data().retina(),
}


def _skimage_data() -> Any:
    # Imported on demand: it is slow to import and only needed to fill the cache once.
    import skimage.data

    return skimage.data


def sample_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where SampleDataModule keeps its PNGs: `cache_dir`, else $GANCOLOR_CACHE/sample, else
    ~/.cache/gancolor/sample."""
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
    base = os.environ.get("GANCOLOR_CACHE")
    if base:
        return Path(os.path.expanduser(base)).absolute() / "sample"
    return Path.home() / ".cache" / "gancolor" / "sample"


def write_sample_photos(folder: Path) -> list[Path]:
    """Write any missing sample PNG into `folder`; return all of them.

    Each file appears atomically (written under a hidden temporary name, then
    renamed), so concurrent runs, e.g. DDP ranks, never scan a half-written PNG.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    created: list[str] = []
    for name, load in SAMPLE_PHOTOS.items():
        target = folder / f"{name}.png"
        if not target.exists():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    Image.fromarray(np.ascontiguousarray(load()[..., :3])).save(fh, format="PNG", compress_level=3)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            created.append(name)
        written.append(target)
    if created:
        log.info("data: wrote %d sample photos to %s", len(created), folder)
    return written


# -- old names ------------------------------------------------------------------------
# Checkpoints and run configs store the `_target_` they were trained with, and before the
# *DataModule names these classes were FolderData and SampleData, importable from this module. Hydra
# must still find them there to resume or evaluate those runs (AlignedData's stored
# target is gancolor.data.AlignedData, kept in gancolor/data/__init__.py).
FolderData = FolderDataModule
SampleData = SampleDataModule
