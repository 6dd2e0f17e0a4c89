"""Colourise one image of any size with a trained recipe, losing none of its detail.

The net only ever sees a small copy (short side = render size, the scale it was
trained at) in a frame of mirrored context (see `NetFrame`). What it predicts is chroma (ab), which carries
little detail, so the ab map is upsampled bilinearly to the original size and joined
with the ORIGINAL full-resolution lightness. Texture, sharpness and noise of the
photo are exactly those of the input; only colour is added.

User hints (a hints model, gancolor.hints) are drawn at the small copy's size and
framed with zeros, not mirrored: a mirrored hint would be a second, false one.

Memory: a 24-megapixel photo is never held as float64, nor as a full float RGB or
Lab image. L is float32 (4 bytes/px), the upsampled ab float32 (8 bytes/px), the
result uint8; the colour conversions (gancolor.color, the only colour code) run over
strips of rows, so their temporaries stay a few megabytes whatever the photo's size.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gancolor import color
from gancolor.device import INFERENCE_PRECISIONS, autocast, check_precision
from gancolor.device import resolve_device as pick_device  # noqa: F401 - colorize and evaluate import it from here
from gancolor.errors import CheckpointError, ConfigError
from gancolor.hints import HINT_CHANNELS, TRAINED_WITHOUT_HINTS, HintError, takes_hints
from gancolor.nets.layers import mirror_pad
from gancolor.options import tta_option

# Pixels per strip for the colour conversions. On the CPU, strips whose temporaries
# fit in cache convert 3-4x faster than whole images (kornia makes ~10 passes over
# each); on a GPU, large strips keep the launch overhead negligible.
#
# On the CPU the strips are spread over worker threads that each run torch
# single-threaded, instead of letting every one of kornia's ~30 small ops per strip
# fork and join torch's OpenMP team: those joins wait for the slowest thread, and on
# a busy machine (other jobs on the same cores) that made a 12 MP conversion 30x
# slower (31 s instead of 0.9 s, measured on 2 cores at load 7).
_STRIP_PIXELS = {"cpu": 1 << 17, "cuda": 1 << 24}


def net_stride(recipe) -> int:
    """The multiple a generator needs its input size to be (1 when it does not say)."""
    strides = [int(getattr(m, "stride", 1) or 1) for m in recipe.generator_modules()]
    return max(strides, default=1)


def run_checkpoint(path: str | os.PathLike, say=None, key: str = "ckpt") -> Path:
    """ckpt=PATH for colorize and evaluate (and training's init_from=, the `key`): a .pt
    file as given, or a run folder (or its checkpoints/), meaning its best.pt, else its
    last.pt; `say` is told which."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    folder = path if path.name == "checkpoints" or not (path / "checkpoints").is_dir() else path / "checkpoints"
    for name, why in (("best.pt", "the run's best"), ("last.pt", "the run has no best.pt")):
        if (folder / name).is_file():
            if say is not None:
                say(f"gancolor: {key}: using {folder / name} ({why})")
            return folder / name
    raise CheckpointError(f"{key}: no best.pt or last.pt in {folder}")


def trained_size(ckpt: dict, default: int = 256) -> int:
    """The resolution a checkpoint was trained at (its data.image_size)."""
    data = (ckpt.get("config") or {}).get("data") or {}
    size = data.get("image_size")
    return int(size) if isinstance(size, (int, float)) and size > 0 else default


def render_shape(height: int, width: int, render_size: int) -> tuple[int, int]:
    """Size of the net's input: short side `render_size`, aspect kept.

    The short side, not the long one, because that is how training scales photos
    (validation: short side to data.image_size, then a centre crop), so objects
    reach the net at the size it learned them at.
    """
    scale = render_size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


# Mirrored context around the photo on every side: a fraction of the render size, and
# at least MIN_CONTEXT px. A convolutional net's outermost output pixels are not like
# the others: its zero-padded convolutions see zeros there, and the last transposed
# convolution of a U-Net gives them half the taps of an inner pixel, so they came out
# with about half the colour, and upsampled to the photo's full size that made pale
# bands along its borders (issue 13). With mirrored photo around it, every pixel of
# the photo is an inner pixel of the net's input; the outermost ones fall in the
# context, which is cropped away.
CONTEXT_FRACTION = 1 / 32
MIN_CONTEXT = 2


@dataclass(frozen=True)
class NetFrame:
    """Where the photo sits in the net's input: `margin` px of mirrored context at
    least on every side, then as much more as makes each side a multiple of the
    net's stride, split evenly between the two ends.

    The frame's short side stays the render size rounded up to the stride, so a photo
    rendered at the size the net was trained at is seen in a frame of exactly that
    size, as in training (and at the same cost): the photo itself is rendered
    `2 * margin` px smaller instead (6 %; its ab is upsampled to full size anyway).
    """

    render_size: int
    stride: int

    @property
    def margin(self) -> int:
        return max(MIN_CONTEXT, round(self.render_size * CONTEXT_FRACTION))

    @property
    def photo_size(self) -> int:
        """The short side the photo is rendered at inside the frame."""
        frame = -(-self.render_size // self.stride) * self.stride
        return max(1, min(self.render_size, frame - 2 * self.margin))

    def padding(self, length: int) -> tuple[int, int]:
        """(before, after) for one side of the photo `length` px long."""
        total = -(-(length + 2 * self.margin) // self.stride) * self.stride - length
        return total // 2, total - total // 2


@dataclass
class Prepared:
    """An image ready for the net: full-res L, its small copy, and its alpha."""

    L: torch.Tensor  # (1, 1, H, W) normalised, float32, on the work device
    small: torch.Tensor  # (1, 1, h, w) what the net sees
    alpha: np.ndarray | None
    hints: torch.Tensor | None = None  # (1, 3, h, w) hint maps at the small size (gancolor.hints)

    @property
    def shape(self) -> tuple[int, int]:
        return self.L.shape[-2], self.L.shape[-1]


class Colorizer:
    """A recipe wrapped for inference on photos of any size.

        colorizer = Colorizer(recipe, render_size=256)
        rgb = colorizer(pixels)  # (H, W) gray uint8/uint16, (H, W, 3) RGB, (H, W, 4) RGBA

    or, to batch several images through the net: `prepare` each, `predict` a list
    of equally shaped small inputs, then `finish` each with its predicted ab.
    """

    def __init__(self, recipe, render_size: int, device: torch.device | str = "cpu", precision: str = "32",
                 tta: str = "none") -> None:
        if int(render_size) < 1:
            raise ConfigError(f"render_size must be >= 1, got {render_size}")
        self.precision = check_precision(precision, "precision", INFERENCE_PRECISIONS)
        self.tta = tta_option(tta)
        self.recipe = recipe.eval()
        self.render_size = int(render_size)
        self.device = torch.device(device)
        self.stride = net_stride(recipe)
        # An NIR recipe (model.target=lab / rgb) is given the NIR image and predicts the
        # whole colour image, which is upsampled as ab is: there is no lightness to keep.
        self.nir = getattr(recipe, "input_kind", "gray") == "nir"
        self.frame = NetFrame(self.render_size, self.stride)
        self.strip_pixels = _STRIP_PIXELS.get(self.device.type, 1 << 20)
        self._luts: dict[int, np.ndarray] = {}
        self._cpu_twin: Colorizer | None = None
        self._twin_lock = threading.Lock()  # colorize's writer threads may all run out of memory at once
        self._pool = None
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            self._pool = ThreadPoolExecutor(
                max_workers=torch.get_num_threads(),
                thread_name_prefix="gancolor-strips",
                initializer=torch.set_num_threads,  # per thread: the caller keeps its own count
                initargs=(1,),
            )

    # -- stage 1: lightness --------------------------------------------------------
    @torch.no_grad()
    def prepare(self, pixels: np.ndarray, alpha: np.ndarray | None = None, hints=None) -> Prepared:
        """`hints`: a gancolor.hints.UserHints for this image (a hints model only)."""
        if hints is not None and not self.takes_hints:
            raise HintError(f"{hints.source}: this model {TRAINED_WITHOUT_HINTS}")
        pixels, alpha = _split_alpha(pixels, alpha)
        L = self.nir_input(pixels) if self.nir else self.lightness(pixels)
        h, w = render_shape(L.shape[-2], L.shape[-1], self.frame.photo_size)
        if bool(L.amin() == L.amax()):
            # A flat photo (a blank scan, an empty frame) stays exactly flat: resizing
            # keeps a constant only up to rounding (1e-8 ripples), which a net's
            # instance norms amplify into colour noise that differs between runtimes
            # (see nets.layers.InstanceNorm2d, exact on exactly uniform maps only).
            small = L[..., :1, :1].expand(*L.shape[:-2], h, w)
        elif h <= L.shape[-2]:
            # Area averaging when shrinking, as training's INTER_AREA resize: bilinear
            # would alias fine texture into the net's input.
            small = F.interpolate(L, size=(h, w), mode="area")
        else:
            small = F.interpolate(L, size=(h, w), mode="bilinear", align_corners=False)
        maps = None if hints is None else hints.maps(L.shape[-2], L.shape[-1], (h, w), self.device)
        return Prepared(L, small.contiguous(), alpha, maps)

    def lightness(self, pixels: np.ndarray) -> torch.Tensor:
        """Normalised L (1, 1, H, W) float32 of gray (8/16-bit) or RGB uint8 pixels."""
        if pixels.ndim == 2:
            # Gray sRGB values have one L each: a lookup table (made by color.py) is
            # exact and avoids converting three identical channels per pixel.
            if pixels.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"gray pixels must be uint8 or uint16, got {pixels.dtype}")
            lut = self._lut(65536 if pixels.dtype == np.uint16 else 256)
            return _to_device(torch.from_numpy(lut[pixels]), self.device).view(1, 1, *pixels.shape)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected (H, W) gray or (H, W, 3) uint8 RGB, got {pixels.shape} {pixels.dtype}")
        height, width = pixels.shape[:2]
        source = _readonly_tensor(pixels)
        L = torch.empty((1, 1, height, width), dtype=torch.float32, device=self.device)

        def strip(r0: int, r1: int) -> None:
            # Channel-first and contiguous before converting: kornia on a strided HWC
            # view runs several times slower.
            rgb = _to_device(source[r0:r1], self.device).permute(2, 0, 1).contiguous().unsqueeze(0)
            L[..., r0:r1, :] = color.rgb_to_lightness(color.uint8_to_float(rgb))

        self._each_strip(height, width, strip)
        return L

    def nir_input(self, pixels: np.ndarray) -> torch.Tensor:
        """The net's input (1, 1, H, W) of NIR pixels (8/16-bit gray); a colour image
        raises NotNIR, which colorize reports as a skipped file."""
        from gancolor.data.nir import nir_pixels

        return color.nir_to_net(torch.from_numpy(nir_pixels(pixels))).to(self.device).view(1, 1, *pixels.shape[:2])

    def _lut(self, depth: int) -> np.ndarray:
        if depth not in self._luts:
            ramp = torch.arange(depth, dtype=torch.float32) / (depth - 1)
            self._luts[depth] = color.rgb_to_lightness(ramp.view(1, 1, 1, -1).expand(1, 3, 1, -1)).flatten().numpy()
        return self._luts[depth]

    # -- stage 2: the net ------------------------------------------------------------
    @torch.no_grad()
    def predict(self, smalls: list[torch.Tensor], hints: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """ab (1, 2, h, w) for each small L; all of them must share one shape. `hints`:
        each one's hint maps (Prepared.hints) or None, for a hints model."""
        batch = torch.cat([small.to(self.device) for small in smalls])  # some may have been prepared on the CPU
        h, w = batch.shape[-2:]
        (top, bottom), (left, right) = self.frame.padding(h), self.frame.padding(w)
        framed = mirror_pad(batch, top, bottom, left, right)
        extra = {}
        if self.takes_hints:
            maps = torch.cat([
                m.to(self.device) if m is not None else batch.new_zeros((1, HINT_CHANNELS, h, w))
                for m in (hints or [None] * len(smalls))
            ])
            extra["hints"] = F.pad(maps, (left, right, top, bottom))  # zeros: no hint in the mirrored frame
        if self.tta == "flip":
            # The mirrored photo, in the same call, then mirrored back: the average is
            # exactly mirror-symmetric in the net's left-right biases (blotches, the
            # transposed convolutions' grid), which bench/quality.py measured as higher
            # PSNR and SSIM at a little less colour.
            framed = torch.cat([framed, framed.flip(-1)])
            extra = {key: torch.cat([value, value.flip(-1)]) for key, value in extra.items()}
        with autocast(self.device, self.precision):
            ab = self.recipe.colorize(framed, **extra)
        if self.tta == "flip":
            plain, mirrored = ab.float().chunk(2)
            ab = (plain + mirrored.flip(-1)) / 2
        ab = ab[..., top : top + h, left : left + w].float().clamp_(-1.0, 1.0)
        return list(ab.split(1))

    # -- stage 3: full-resolution result ------------------------------------------
    @torch.no_grad()
    def finish(self, prepared: Prepared, ab_small: torch.Tensor) -> np.ndarray:
        """Original L + upsampled ab -> (H, W, 3) uint8 RGB, or (H, W, 4) with alpha."""
        height, width = prepared.shape
        ab = F.interpolate(ab_small.to(self.device), size=(height, width), mode="bilinear", align_corners=False)
        channels = 3 if prepared.alpha is None else 4
        out = np.empty((height, width, channels), dtype=np.uint8)
        target = torch.from_numpy(out)

        def strip(r0: int, r1: int) -> None:
            if self.nir:  # the prediction is the whole image, in the recipe's target space
                rgb = color.decode(ab[..., r0:r1, :], self.recipe.target)
            else:
                rgb = color.lab_normalized_to_rgb(prepared.L[..., r0:r1, :], ab[..., r0:r1, :])
            target[r0:r1, :, :3] = color.float_to_uint8(rgb)[0].permute(1, 2, 0).cpu()

        self._each_strip(height, width, strip)
        if prepared.alpha is not None:
            out[..., 3] = prepared.alpha
        return out

    def __call__(self, pixels: np.ndarray, alpha: np.ndarray | None = None, hints=None) -> np.ndarray:
        prepared = self.prepare(pixels, alpha, hints)
        return self.finish(prepared, self.predict([prepared.small], [prepared.hints])[0])

    @property
    def takes_hints(self) -> bool:
        return takes_hints(self.recipe)

    def gray(self, prepared: Prepared) -> np.ndarray:
        """What the net was given, as an (H, W, 3) uint8 image (for side-by-side views)."""
        height, width = prepared.shape
        out = np.empty((height, width, 3), dtype=np.uint8)
        target = torch.from_numpy(out)

        def strip(r0: int, r1: int) -> None:
            shown = prepared.L[..., r0:r1, :]
            rgb = color.nir_from_net(shown) if self.nir else color.gray_to_rgb(shown)
            target[r0:r1] = color.float_to_uint8(rgb)[0].permute(1, 2, 0).cpu()

        self._each_strip(height, width, strip)
        return out

    # -- when the device runs out of memory ------------------------------------------
    def predict_within_memory(self, smalls: list[torch.Tensor], warn, hints: list | None = None) -> list[torch.Tensor | None]:
        """`predict`, but a batch the device has no memory for is retried in halves, and
        one image that still does not fit is run on the CPU; `warn` says so. None for an
        image that even the CPU has no memory for (the others still get theirs)."""
        hints = hints or [None] * len(smalls)
        if len(smalls) == 1:
            cpu_hints = [None if hints[0] is None else hints[0].cpu()]
            try:
                return self._on_cpu_when_out_of_memory(
                    "run through the net", lambda: _predict(self, smalls, hints), lambda twin: _predict(twin, [smalls[0].cpu()], cpu_hints), warn
                )
            except torch.OutOfMemoryError:
                return [None]
        try:
            return _predict(self, smalls, hints)
        except torch.OutOfMemoryError:
            pass  # retried below, where the failed call's tensors are freed with its traceback
        _release_cached_memory(self.device)
        half = len(smalls) // 2
        warn(f"out of memory on {self.device} for {len(smalls)} images at once: retrying {half} at a time")
        return self.predict_within_memory(smalls[:half], warn, hints[:half]) + self.predict_within_memory(smalls[half:], warn, hints[half:])

    def prepare_within_memory(self, pixels: np.ndarray, alpha: np.ndarray | None, warn, hints=None) -> Prepared:
        """`prepare`, on the CPU (said through `warn`) when the device has no memory for it."""
        extra = {} if hints is None else {"hints": hints}  # (a caller's wrapped prepare may predate hints)
        return self._on_cpu_when_out_of_memory(
            "prepared", lambda: self.prepare(pixels, alpha, **extra), lambda twin: twin.prepare(pixels, alpha, **extra), warn
        )

    def finish_within_memory(self, prepared: Prepared, ab_small: torch.Tensor, warn) -> np.ndarray:
        """`finish`, on the CPU (said through `warn`) when the device has no memory for
        it, or when the image was prepared there."""
        if prepared.L.device.type != self.device.type:
            return self.cpu_twin().finish(prepared, ab_small.cpu())

        def on_cpu(twin: Colorizer) -> np.ndarray:
            return twin.finish(Prepared(prepared.L.cpu(), prepared.small.cpu(), prepared.alpha, prepared.hints), ab_small.cpu())

        return self._on_cpu_when_out_of_memory("finished", lambda: self.finish(prepared, ab_small), on_cpu, warn)

    def _on_cpu_when_out_of_memory(self, done: str, run, run_on_cpu, warn):
        """run(), or, where the device has no memory for it, run_on_cpu(cpu_twin())."""
        try:
            return run()
        except torch.OutOfMemoryError:
            if self.device.type == "cpu":
                raise
        # Retried out here: inside the except block its traceback would keep the failed
        # call's tensors alive.
        _release_cached_memory(self.device)
        warn(f"out of memory on {self.device}: this image is {done} on the CPU")
        return run_on_cpu(self.cpu_twin())

    def cpu_twin(self) -> "Colorizer":
        """This colorizer with a copy of its net on the CPU, made on first use without
        allocating anything on the device (which has just run out of memory)."""
        with self._twin_lock:
            return self._make_cpu_twin()

    def _make_cpu_twin(self) -> Colorizer:
        if self._cpu_twin is None:
            import copy

            # deepcopy takes a tensor found in its memo as already copied: hand it the
            # CPU copies, so the device copies are never duplicated on the device.
            memo: dict[int, object] = {id(p): torch.nn.Parameter(p.detach().cpu(), p.requires_grad) for p in self.recipe.parameters()}
            memo.update({id(b): b.detach().cpu() for b in self.recipe.buffers()})
            recipe = copy.deepcopy(self.recipe, memo).cpu()
            self._cpu_twin = Colorizer(recipe, self.render_size, "cpu", "32", self.tta)
        return self._cpu_twin

    def close(self) -> None:
        """Stop the strip threads (they also stop when the Colorizer is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._cpu_twin is not None:
            self._cpu_twin.close()

    def _each_strip(self, height: int, width: int, fn) -> None:
        """fn(r0, r1) over horizontal strips; strips write disjoint rows, so they may
        run in any order and at once."""
        rows = max(1, self.strip_pixels // max(width, 1))
        spans = [(r0, min(height, r0 + rows)) for r0 in range(0, height, rows)]
        if self._pool is None or len(spans) == 1:
            for r0, r1 in spans:
                fn(r0, r1)
            return
        for future in [self._pool.submit(fn, r0, r1) for r0, r1 in spans]:
            future.result()  # re-raises a worker's exception here


def _predict(colorizer: Colorizer, smalls: list[torch.Tensor], hints: list) -> list[torch.Tensor]:
    """colorizer.predict, given hints only where there are some (so an automatic call
    stays the plain predict(smalls) it always was)."""
    if any(h is not None for h in hints):
        return colorizer.predict(smalls, hints)
    return colorizer.predict(smalls)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    # From pinned memory a copy to the GPU is asynchronous: the thread preparing the next
    # photos goes on instead of waiting for the copy (and for the net's queued work).
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def _release_cached_memory(device: torch.device) -> None:
    # The failed call's blocks sit in the caching allocator; a retry needs them back.
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing `array`'s memory, which is only ever read.

    Arrays decoded by PIL are read-only; torch warns about those because writing
    through the tensor would be undefined. Copying a 24-megapixel photo to silence a
    warning about writes that never happen is not worth 72 MB.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _split_alpha(pixels: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Accept (H, W, 4) RGBA and (H, W, 2) gray+alpha arrays as well."""
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return np.ascontiguousarray(pixels[..., :-1].squeeze(2) if pixels.shape[2] == 2 else pixels[..., :3]), (
            np.ascontiguousarray(pixels[..., -1]) if alpha is None else alpha
        )
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return pixels, alpha
