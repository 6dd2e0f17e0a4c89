"""Colourise photographs of any size with a trained checkpoint.

    python -m gancolor.colorize ckpt=runs/pix2pix/.../checkpoints/last.pt input=old_photos/ output=out/

ckpt      a checkpoint file, or a run folder: its best.pt, else its last.pt (said which),
          or an ONNX export (python -m gancolor.export), run with onnxruntime
input     an image file, a folder (searched recursively) or a glob ('scans/**/*.tif': quote it)
output    a folder; each result keeps its input's path relative to the input folder (or to
          the glob's fixed part). With a single input file, output may be a file name.

Options (key=value; defaults in conf/colorize.yaml):
  output_ext=same|jpg|png|webp|tif|bmp   format of the results (same: the input's own)
  quality=95          JPEG / WebP quality
  overwrite=false     an existing output is kept (and counted as done) unless true
  compare=false       also write NAME_compare.EXT: input | output side by side
  render_size=N       short side the net runs at (default: its training resolution)
  device=auto         auto | cpu | cuda | cuda:N
  precision=32        32 | bf16
  batch_size=N        images per net call (default 8 on a GPU, 1 on the CPU)
  workers=auto        threads that decode and encode photos beside the net (auto: 1 on
                      the CPU, whose cores the net already uses; with CUDA one per spare
                      core, at most 8). Results do not depend on it.
  max_pixels=N        skip larger images (default 100000000; null: no limit)
  progress_bar=true
  temperature=T       model=cic only: annealed-mean temperature (lower: more vivid; 0: the mode)
  use_ema=true        the generators' EMA weights where the checkpoint has them (model.ema_decay); false: raw
  tta=none            flip: also run the photo mirrored and average the two (twice the net's time;
                      higher PSNR/SSIM, a little less colour: BENCHMARKS.md, Quality)
  hints=PATH          a hints model only (experiment=pix2pix_hints): a .json list of
                      {"x": .., "y": .., "color": "#rrggbb"} in the photo's pixels, or a scribble
                      .png of its size (non-transparent pixels are hints); for a folder of inputs,
                      a folder of hint files named like them (a.jpg -> a.json or a.png)

Every file Pillow reads is an input (GIF, JPEG 2000, PPM/PGM, TGA, ...: decided by
content; an animated one gives its first frame, said once); hidden files and obvious
non-images (.txt, .json, .md, ...) are passed over quietly, and any other file is
counted in the summary ("2 files skipped: 1 unreadable, 1 unsupported format: a.xyz").
Every result has its input's size and orientation (EXIF applied, orientation tag
dropped), and its alpha channel where the format holds one. A bad input is reported
on one line and skipped; the others are still done. So is a photo whose file in a
hints= folder cannot be used (not JSON, a point off the photo): "1 bad hints" in the
summary; a single hints= file for one photo is a bad argument instead.

SIGTERM or Ctrl-C stops the run after the images being written: only complete outputs
exist, the summary says how many were done, and the same command run again continues
where it stopped (existing outputs are kept unless overwrite=true). Where a GPU runs
out of memory, a batch is retried in halves and a single image on the CPU (with a
warning); an image that fits nowhere is skipped, never written uncoloured.

Exit status: 0 every input was colourised (or already was), 2 some inputs were
skipped, 1 none could be done; 2 also for a bad argument, before any work; 130 after
Ctrl-C, 143 after SIGTERM.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gancolor.commandline import compose_command
from gancolor.data.images import (
    DecodedImage,
    UnreadableImage,
    UnsupportedFormat,
    allow_large_images,
    check_format,
    find_images,
    load_image,
    may_be_image,
    quiet_pillow_warnings,
    skipped_summary,
)
from gancolor.errors import ConfigError, UserError, fail
from gancolor.options import (
    bool_option,
    int_option,
    int_or_auto_option,
    temperature_option,
    tta_option,
)

# Output formats by extension; the first extension of each format is what output_ext
# names pick.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
OUTPUT_EXTS = ("same", "jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
_JPEG_MAX_EXIF = 65533  # one APP1 segment
COMPARE_SUFFIX = "_compare"

EXIT_OK, EXIT_NONE, EXIT_SOME = 0, 1, 2
OUT_OF_MEMORY = "out of memory (lower max_pixels, or use a machine with more memory)"
BAD_HINTS = "bad hints"  # how the summary counts a photo whose hints file cannot be used


# -- what to do: inputs -> outputs ---------------------------------------------------


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


@dataclass
class Options:
    ckpt: Path
    input: str
    output: Path
    output_ext: str = "same"
    quality: int = 95
    overwrite: bool = False
    compare: bool = False
    render_size: int | None = None
    device: str = "auto"
    precision: str = "32"
    batch_size: int | None = None
    workers: int | None = None  # None: auto (see writer_threads)
    max_pixels: int | None = 100_000_000
    progress_bar: bool = True
    temperature: float | None = None
    use_ema: bool = True
    tta: str = "none"
    hints: Path | None = None  # a hints file (one input) or a folder of them, matched by name

    @classmethod
    def from_config(cls, cfg) -> "Options":
        ext = str(cfg.output_ext).lower().lstrip(".")
        if ext not in OUTPUT_EXTS:
            raise ConfigError(f"output_ext must be one of {', '.join(OUTPUT_EXTS)}, got {cfg.output_ext!r}")
        quality = int_option("quality", cfg.quality, 1)
        if quality > 100:
            raise ConfigError(f"quality must be 1..100, got {quality}")
        precision = str(cfg.precision)
        if precision not in ("32", "bf16"):
            raise ConfigError(f"precision must be 32 or bf16, got {cfg.precision!r}")
        return cls(
            ckpt=Path(str(cfg.ckpt)).expanduser(),
            input=os.path.expanduser(str(cfg.input)),
            output=Path(str(cfg.output)).expanduser(),
            output_ext=ext,
            quality=quality,
            overwrite=bool_option("overwrite", cfg.overwrite),
            compare=bool_option("compare", cfg.compare),
            render_size=int_option("render_size", cfg.render_size, 1, allow_none=True),
            device=str(cfg.device),
            precision=precision,
            batch_size=int_option("batch_size", cfg.batch_size, 1, allow_none=True),
            workers=int_or_auto_option("workers", cfg.get("workers", "auto"), 1),
            max_pixels=int_option("max_pixels", cfg.max_pixels, 1, allow_none=True),
            progress_bar=bool_option("progress_bar", cfg.progress_bar),
            temperature=temperature_option(cfg.get("temperature")),
            use_ema=bool_option("use_ema", cfg.get("use_ema", True)),
            tta=tta_option(cfg.get("tta", "none")),
            hints=None if cfg.get("hints") is None else Path(str(cfg.hints)).expanduser(),
        )


def apply_temperature(recipe, temperature: float | None) -> None:
    """CIC decodes its colour distribution with an annealed mean; other recipes have none."""
    if temperature is None:
        return
    if not hasattr(recipe, "temperature"):
        raise ConfigError(f"temperature applies to model=cic checkpoints; this one is {recipe.name}")
    recipe.temperature = temperature


def check_hints_option(options: Options, jobs: list[Job], recipe) -> None:
    """hints= names an existing file for one input, or a folder; the model must take hints."""
    from gancolor.hints import HINT_FILE_SUFFIXES, TRAINED_WITHOUT_HINTS, takes_hints

    if options.hints is None:
        return
    if not takes_hints(recipe):
        raise UserError(f"hints={options.hints}: {options.ckpt} {TRAINED_WITHOUT_HINTS}")
    if options.hints.is_dir():
        return
    if not options.hints.is_file():
        raise UserError(f"hints not found: {options.hints}")
    if options.hints.suffix.lower() not in HINT_FILE_SUFFIXES:
        raise UserError(f"hints={options.hints}: a hints file is .json (points) or .png (a scribble)")
    if len(jobs) != 1:
        raise UserError(f"hints={options.hints} is one file for {len(jobs)} inputs: give a folder of hint files named like the images")


def hints_for(options: Options, src: Path):
    """The UserHints of input `src` (None: it has none)."""
    from gancolor.hints import UserHints, hint_file_for

    if options.hints is None:
        return None
    if options.hints.is_file():
        return UserHints.load(options.hints)
    source = Path(options.input)
    found = hint_file_for(src, options.hints, source if source.is_dir() else None)
    return None if found is None else UserHints.load(found)


def output_suffix(src: Path, output_ext: str) -> str:
    if output_ext == "same":
        # An input format we cannot write (or an odd extension on an explicit file)
        # gets PNG: lossless, and it keeps alpha.
        return src.suffix if src.suffix.lower() in FORMATS else ".png"
    return "." + output_ext


def plan(options: Options) -> tuple[list[Job], list[tuple[Path, str]]]:
    """The (input, output) pairs, in sorted input order, and the files of a folder or
    glob that are of no format Pillow reads (with why). UserError when nothing matches."""
    raw = options.input
    source = Path(raw)
    exclude = options.output.resolve()
    named_file = source.is_file() and options.output.suffix.lower() in FORMATS and not options.output.is_dir()
    if options.output.exists() and not options.output.is_dir() and not named_file:
        # Said once, before any work: otherwise every input fails on its own.
        raise UserError(f"output is an existing file, not a folder: {options.output}"
                        + ("" if source.is_file() else " (with a folder or a glob as input, output= names a folder)"))
    if source.is_file():
        # Named on its own: whatever it is, it is tried and its own failure reported.
        if named_file:
            wanted = FORMATS.get("." + options.output_ext)
            if wanted is not None and wanted != FORMATS[options.output.suffix.lower()]:
                # The named file's suffix decides its format; ignoring output_ext silently
                # would write another format than the one asked for.
                raise ConfigError(f"output_ext={options.output_ext} but output names a {options.output.suffix} file: "
                                  f"name it {options.output.stem}.{options.output_ext}, or leave output_ext out")
            return [Job(source, options.output)], []
        return [Job(source, options.output / (source.stem + output_suffix(source, options.output_ext)))], []
    if source.is_dir():
        base = source
        if _is_within(source.resolve(), exclude):
            # Every input would be passed over as an earlier result (below), and each
            # result would replace its own input.
            where = "the input folder" if source.resolve() == exclude else f"a folder that holds the input folder {raw}"
            raise UserError(f"output={options.output} is {where}: choose another folder for the results")
        # An output folder inside the input folder must not feed last run's results back in.
        files = [p for p in find_images(source) if not _is_within(p.resolve(), exclude)]
    elif glob.has_magic(raw):
        base = _glob_base(raw)
        files = sorted(
            (Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file() and may_be_image(p)),
            key=lambda p: p.as_posix(),
        )
        if files and all(_is_within(p.resolve(), exclude) for p in files):
            raise UserError(f"output={options.output} holds every file {raw} matches: choose another folder for the results")
        files = [p for p in files if not _is_within(p.resolve(), exclude)]
    else:
        raise UserError(f"input not found: {raw}")
    jobs, unsupported = [], []
    for path in files:
        # Decided by content, from the header: such a file never claims an output name.
        try:
            check_format(path)
        except UnsupportedFormat as exc:
            unsupported.append((path, exc.reason))
            continue
        rel = path.relative_to(base)
        jobs.append(Job(path, options.output / rel.parent / (rel.stem + output_suffix(path, options.output_ext))))
    if not jobs:
        passed_over = skipped_summary([(p, UnsupportedFormat.kind) for p, _ in unsupported])
        raise UserError(f"no image files at {raw}" + (f" ({passed_over})" if passed_over else ""))
    return jobs, unsupported


def _glob_base(pattern: str) -> Path:
    """The pattern's leading folders without wildcards: results are named relative to it."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# -- writing ---------------------------------------------------------------------------

_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    # mkstemp creates 0600 files; results should get the permissions any new file gets.
    # The umask can only be read by setting it, so writer threads (workers > 1) read it
    # one at a time: another thread must never see, or keep, the moment's 0.
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            _UMASK = os.umask(0)
            os.umask(_UMASK)
        return 0o666 & ~_UMASK


def write_image(pixels: np.ndarray, path: Path, quality: int = 95, exif: bytes | None = None) -> None:
    """Write uint8 RGB/RGBA pixels atomically: a temporary file in the same folder, then
    os.replace, so an interrupted run never leaves half a JPEG under the final name."""
    fmt = FORMATS.get(path.suffix.lower(), "PNG")
    image = Image.fromarray(pixels)
    if image.mode == "RGBA" and fmt not in ALPHA_FORMATS:
        image = image.convert("RGB")
    params: dict = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if exif and fmt in EXIF_FORMATS and not (fmt == "JPEG" and len(exif) > _JPEG_MAX_EXIF):
        params["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **params)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """input | output as one RGB image; transparent areas shown over white."""
    return np.concatenate([_flatten(left), _flatten(right)], axis=1)


def _flatten(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 3:
        return pixels
    alpha = pixels[..., 3:].astype(np.float32) / 255.0
    return (pixels[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def compare_path(dst: Path) -> Path:
    return dst.with_name(dst.stem + COMPARE_SUFFIX + dst.suffix)


# -- the run -------------------------------------------------------------------------


@dataclass
class Tally:
    """What became of each input. `failed` holds (input, reason, kind); kind is what
    the summary counts ("unreadable", "too large", ...). Files of no image format
    (`unsupported`) are reported but are no failure: they were never photos."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str, str]] = field(default_factory=list)
    unsupported: list[tuple[Path, str]] = field(default_factory=list)
    todo: int = 0  # inputs that needed colourising (not kept, not refused up front)
    done: int = 0  # of those, how many were colourised or failed
    stopped_by: int | None = None  # the signal that stopped the run early

    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return 128 + self.stopped_by  # the shell's convention for a run ended by a signal
        if not self.failed:
            return EXIT_OK
        return EXIT_SOME if (self.written or self.kept) else EXIT_NONE

    def skipped(self) -> list[tuple[Path, str]]:
        return [(p, kind) for p, _, kind in self.failed] + [(p, UnsupportedFormat.kind) for p, _ in self.unsupported]


def _eight_bit_view(decoded: DecodedImage) -> np.ndarray:
    pixels = decoded.pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if decoded.alpha is not None:
        rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
        return np.dstack([rgb, decoded.alpha])
    return pixels


def run(options: Options, log=None) -> Tally:
    """Colourise everything `options` names. Per-file problems are tallied, not raised."""
    from gancolor.onnx_runtime import load_model
    from gancolor.inference import Colorizer, pick_device, run_checkpoint, trained_size

    device = pick_device(options.device)
    quiet_pillow_warnings()  # a damaged file gets one line, from its decoding
    allow_large_images(options.max_pixels)  # before plan, whose format check opens every file
    jobs, unsupported = plan(options)
    recipe, ckpt = load_model(run_checkpoint(options.ckpt, log or _say), device, use_ema=options.use_ema)  # a checkpoint, or an ONNX export
    apply_temperature(recipe, options.temperature)
    check_hints_option(options, jobs, recipe)
    render_size = options.render_size or trained_size(ckpt)
    colorizer = Colorizer(recipe, render_size, device, options.precision, options.tta)
    try:
        tally = process(jobs, colorizer, options, log)
    finally:
        colorizer.close()
    tally.unsupported = unsupported
    return tally


def writer_threads(workers: int | None, device) -> int:
    """workers=auto: 1 on the CPU, where the net already keeps every core busy and
    decoding between its calls costs nothing it could have used; with CUDA, one thread
    per core the main thread leaves free, up to 8 (a 12 MP JPEG takes ~80 ms to decode
    and ~100 ms to encode, while the net takes a few ms a photo)."""
    if workers is not None:
        return workers
    if device.type != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def process(jobs: list[Job], colorizer, options: Options, log=None) -> Tally:
    """Colourise `jobs` with a ready Colorizer (what `run` does once the model is loaded)."""
    import torch
    from tqdm.auto import tqdm

    from gancolor.hints import HintError

    batch_size = options.batch_size or (8 if colorizer.device.type == "cuda" else 1)
    workers = writer_threads(options.workers, colorizer.device)
    allow_large_images(options.max_pixels)

    tally = Tally()
    bar = tqdm(total=len(jobs), unit="img", disable=None if options.progress_bar else True, dynamic_ncols=True)

    def say(message: str) -> None:
        (log or (lambda m: tqdm.write(m, file=sys.stderr)))(message)

    def skip(job: Job, reason: str, kind: str) -> None:
        tally.failed.append((job.src, reason, kind))
        say(f"gancolor: skipped {job.src}: {reason}")
        bar.update()

    todo: list[Job] = []
    claimed: dict[Path, Path] = {}
    for job in jobs:
        key = job.dst.resolve()
        if key == job.src.resolve():
            skip(job, "the output would replace the input itself (choose another output= or output_ext=)", "name clash")
        elif key in claimed:
            skip(job, f"same output file {job.dst} as {claimed[key]} (rename one, or choose output_ext=)", "name clash")
        elif job.dst.exists() and not options.overwrite:
            claimed[key] = job.src
            tally.kept.append(job.dst)
            bar.update()
        else:
            claimed[key] = job.src
            todo.append(job)

    refused_up_front = len(tally.failed)

    def load(job: Job):
        decoded = load_image(job.src, max_pixels=options.max_pixels)
        prepared = colorizer.prepare_within_memory(decoded.pixels, decoded.alpha, warn, hints_for(options, job.src))
        if not options.compare:
            decoded.pixels = None  # the full-res input is not needed again: free it early
        return decoded, prepared

    def warn(message: str) -> None:
        say(f"gancolor: warning: {message}")

    def colourise(job: Job, decoded: DecodedImage, prepared, ab) -> tuple[str, str] | None:
        """Finish and write one image: None once written, else why it was skipped
        (reason, kind). It may run on a writer thread, so it records nothing itself."""
        try:
            result = colorizer.finish_within_memory(prepared, ab, warn)
            fmt = FORMATS.get(job.dst.suffix.lower(), "PNG")
            if decoded.alpha is not None and fmt not in ALPHA_FORMATS:
                keep = "an output named .png" if job.dst == options.output else "output_ext=png"  # a named file's suffix decides
                say(f"gancolor: note: {job.src}: alpha dropped ({fmt} has none; {keep} keeps it)")
            write_image(result, job.dst, options.quality, decoded.exif)
        except (MemoryError, torch.OutOfMemoryError):
            return OUT_OF_MEMORY, "out of memory"
        except (OSError, ValueError) as exc:
            # Writing: a full disk, no permission, a size the format cannot hold.
            return f"cannot write {job.dst}: {_first_line(exc)}", "not written"
        if options.compare:
            # A side-by-side view is twice as wide: it may exceed what the
            # format holds (JPEG 65535 px) where the result itself did not.
            try:
                write_image(side_by_side(_eight_bit_view(decoded), result), compare_path(job.dst), options.quality)
            except (MemoryError, OSError, ValueError) as exc:
                say(f"gancolor: note: {job.src}: no comparison image: {_first_line(exc)}")
        return None

    def record(job: Job, failure: tuple[str, str] | None) -> None:
        if failure is not None:
            skip(job, *failure)
            return
        tally.written.append(job.dst)
        bar.update()

    # Decoding the next images overlaps with the net and the writing of the current ones.
    reader = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gancolor-read")
    writes = _WritePool(workers, record) if workers > 1 else _WriteInline(record)
    pending: deque[tuple[Job, Future]] = deque()
    upcoming = iter(todo)

    def read_ahead() -> None:
        job = next(upcoming, None)
        if job is not None:
            pending.append((job, reader.submit(load, job)))

    try:
        with _stop_on_signals() as stop:
            for _ in range(batch_size + workers):
                read_ahead()
            while pending and stop.signal is None:
                chunk = []
                while pending and len(chunk) < batch_size:
                    job, future = pending.popleft()
                    read_ahead()
                    try:
                        decoded, prepared = future.result()
                    except UnreadableImage as exc:
                        writes.failed(job, exc.reason, exc.kind)
                        continue
                    except HintError as exc:
                        if options.hints is not None and options.hints.is_file():
                            raise  # one photo, one hints file: the run's own error, one line before any output
                        # One bad file of a hints folder spoils only its photo; the others are still done.
                        writes.failed(job, str(exc), BAD_HINTS)  # the message names the hints file
                        continue
                    except (MemoryError, torch.OutOfMemoryError):
                        writes.failed(job, OUT_OF_MEMORY, "out of memory")
                        continue
                    if decoded.animated:
                        say(f"gancolor: note: {job.src}: animated; its first frame is colourised")
                    chunk.append((job, decoded, prepared))
                # Only images whose net inputs have one shape share a batch: padding one to
                # another's size would change its result (instance norm, borders).
                groups: dict[tuple, list] = defaultdict(list)
                for item in chunk:
                    groups[tuple(item[2].small.shape)].append(item)
                for items in groups.values():
                    abs_ = colorizer.predict_within_memory(
                        [prepared.small for _, _, prepared in items], warn, [prepared.hints for _, _, prepared in items]
                    )
                    for (job, decoded, prepared), ab in zip(items, abs_):
                        if stop.signal is not None:
                            break  # what is written is complete; the rest waits for the next run
                        if ab is None:
                            writes.failed(job, OUT_OF_MEMORY, "out of memory")
                        else:
                            writes.write(job, colourise, decoded, prepared, ab)
            writes.finish(stop)
            tally.stopped_by = stop.signal
            tally.todo, tally.done = len(todo), len(tally.written) + len(tally.failed) - refused_up_front
    finally:
        writes.close()
        for _, future in pending:
            future.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return tally


class _WriteInline:
    """workers=1: each image is finished and written on the calling thread, between
    net calls, and its outcome recorded at once."""

    def __init__(self, record) -> None:
        self._record = record

    def write(self, job: Job, colourise, *args) -> None:
        self._record(job, colourise(job, *args))

    def failed(self, job: Job, reason: str, kind: str) -> None:
        self._record(job, (reason, kind))

    def finish(self, stop: _StopRequest) -> None:
        pass

    def close(self) -> None:
        pass


class _WritePool:
    """workers > 1: each image is finished and written on one of `workers` threads, so
    that the calling thread goes on to the next net call meanwhile.

    Outcomes are recorded on the calling thread, oldest first, whatever order the
    threads finish in: the Tally (its `written` list included), the skip lines and the
    progress bar come exactly as with workers=1, so nothing a run reports depends on
    `workers`, and the Tally needs no lock (one thread touches it). At most 2 x workers
    images are in flight: each holds its full-size L, 400 MB for a 100 MP photo."""

    def __init__(self, workers: int, record) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gancolor-write")
        self._limit = 2 * workers
        self._record = record
        self._queue: deque[tuple[Job, Future]] = deque()

    def write(self, job: Job, colourise, *args) -> None:
        while len(self._queue) >= self._limit:
            self._record_oldest()
        self._queue.append((job, self._pool.submit(colourise, job, *args)))
        self._record_finished()

    def failed(self, job: Job, reason: str, kind: str) -> None:
        # Queued behind the writes submitted before it, so that it is recorded in its turn.
        known: Future = Future()
        known.set_result((reason, kind))
        self._queue.append((job, known))
        self._record_finished()

    def finish(self, stop: _StopRequest) -> None:
        """Wait for the writes. Once a stop is asked for (before or during the wait), the
        writes not yet started are dropped: those images are left for the next run."""
        while self._queue:
            if stop.signal is not None:
                for _, future in self._queue:
                    future.cancel()  # False for one already running: it is waited for
            self._record_oldest()

    def close(self) -> None:
        # After an error or a second Ctrl-C: the writes already running end (each is
        # atomic), the others never start.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _record_finished(self) -> None:
        while self._queue and self._queue[0][1].done():
            self._record_oldest()

    def _record_oldest(self) -> None:
        job, future = self._queue.popleft()
        if not future.cancelled():
            self._record(job, future.result())


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class _StopRequest:
    signal: int | None = None


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM and Ctrl-C stop the run after the images being written, so that only
    complete outputs exist and the summary can say how many; a second Ctrl-C stops at
    once (writes are atomic, so that too leaves no partial file)."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def note(signum, frame) -> None:
        if signum == signal.SIGINT and stop.signal == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signal = signum

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def summary(tally: Tally, output: Path, seconds: float) -> str:
    parts = [f"{len(tally.written)} colourised"]
    if tally.kept:
        parts.append(f"{len(tally.kept)} already there (kept; overwrite=true redoes them)")
    skipped = skipped_summary(tally.skipped())
    if skipped:
        parts.append(skipped)
    return f"gancolor: {', '.join(parts)} -> {output} in {seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_command(
        "colorize", argv, path_keys=frozenset({"ckpt", "input", "output", "hints"}), usage=__doc__ or ""
    )
    started = time.perf_counter()
    try:
        options = Options.from_config(cfg)
        tally = run(options)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    print(summary(tally, options.output, time.perf_counter() - started), flush=True)
    if tally.stopped_by is not None:
        again = "the same command without overwrite=true" if options.overwrite else "the same command"
        print(f"gancolor: stopped by {signal.Signals(tally.stopped_by).name} after {tally.done} of {tally.todo} inputs; "
              f"every output written is complete, and {again} continues where this run stopped", file=sys.stderr, flush=True)
    return tally.exit_code()


if __name__ == "__main__":
    sys.exit(main())
