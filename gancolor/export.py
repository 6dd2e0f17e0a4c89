"""Export a trained generator as one graph that runs without gancolor: ONNX or TorchScript.

    python -m gancolor.export ckpt=runs/pix2pix/.../checkpoints/best.pt output=model.onnx
    python -m gancolor.export ckpt=runs/cic/... format=torchscript output=model.ts temperature=0.2

ckpt      a checkpoint file, or a run folder: its best.pt, else its last.pt (said which).
          Loaded as colorize loads it, so it is the same net with the same weights.
output    the file to write; with format=onnx its name must end in .onnx

Options (key=value; defaults in conf/export.yaml):
  format=onnx|torchscript   onnx needs the extra: pip install 'gancolor[onnx]'
  overwrite=false           an existing output is an error unless true
  temperature=T             model=cic only: the annealed-mean temperature the graph decodes at
  use_ema=true              the generators' EMA weights where the checkpoint has them (model.ema_decay);
                            false: the raw weights. The graph holds the ones chosen (metadata "weights")
  opset=17                  ONNX opset

The graph is the recipe's whole `colorize`: normalised L (N, 1, H, W) in, normalised ab
(N, 2, H, W) out, for any N, H and W. An NIR checkpoint (model.target=lab / rgb) gives
an NIR graph instead: the NIR image (N, 1, H, W) in [-1, 1] in (as
gancolor.color.nir_to_net scales it), the whole colour image (N, 3, H, W) in the
recipe's target space out (normalised Lab, or sRGB in [-1, 1]); its metadata says
input_kind: nir and the target. What each recipe needs is inside it: CIC's
decoding of its bin distribution (annealed mean at the temperature), CycleGAN's
gray -> colour generator (with its sRGB <-> Lab conversions when it works in RGB),
StarGAN's target-domain code, and every net's padding to its stride. The file's
metadata (ONNX metadata_props; TorchScript extra file gancolor.json) says how L and ab
are scaled and how colorize uses the graph. The export is checked before it is
written: on two sizes the exporter did not trace at, and on a uniform gray input, the
file must give what PyTorch gives (to 1e-3 max abs in the output's normalised units),
or nothing is written.

`python -m gancolor.colorize ckpt=model.onnx ...` runs an ONNX export through
onnxruntime with the same pre- and post-processing as the checkpoint (for an NIR
export: on NIR files, as the NIR checkpoint).

Exit status 0, or 2 with one line for a bad argument or a model that cannot be exported.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gancolor import __version__
from gancolor.commandline import compose_command
from gancolor.errors import ConfigError, UserError, fail
from gancolor.hints import HINT_CHANNELS, takes_hints
from gancolor.onnx_runtime import HINTS_INPUT_NAME, METADATA_FORMAT, graph_names, load_model
from gancolor.options import bool_option, int_option, temperature_option

FORMATS = ("onnx", "torchscript")
TORCHSCRIPT_METADATA = "gancolor.json"  # the extra file of a TorchScript export
TRACE_SHAPE = (1, 1, 37, 53)
# Checked after export: another batch size and sizes the trace did not see, odd, so
# every net pads (and a size baked into the graph by the trace would show).
CHECK_SHAPES = ((2, 1, 45, 71), (1, 1, 83, 30))
# And a uniform photo (a blank scan, a flat background) at the last of those sizes: a
# net whose output there hangs on rounding (an instance norm over zero-variance maps,
# see gancolor.nets.layers.InstanceNorm2d) agrees on random L yet not on this. The
# value is L of an 8-bit gray 107 (L* 45.2), scaled as L/50 - 1.
UNIFORM_L = -0.0955
TOLERANCE = 1e-3  # max abs in normalised ab or Lab (1e-3 is 0.1 of a Lab unit: invisible), or sRGB in [-1, 1]

INPUT_DOC = (
    "L: float32 (N, 1, H, W), any N, H, W; CIE L* scaled as L/50 - 1 ([0, 100] -> [-1, 1]). "
    "A gray 8-bit pixel v is sRGB (v, v, v)/255 converted to Lab"
)
OUTPUT_DOC = "ab: float32 (N, 2, H, W), the size of the input; CIE a*, b* scaled as ab/110, clamped to [-1, 1]"
LAB_DOC = "CIE 1976 L*a*b*, D65 white, sRGB transfer curve (IEC 61966-2-1), as kornia.color.rgb_to_lab"
USE_DOC = (
    "gancolor.colorize: L of the photo at full resolution; a copy resized (area when shrinking, bilinear "
    "when enlarging) so its short side is render_size goes through the graph; the ab it gives is upsampled "
    "bilinearly (align_corners=false) to full size and joined with the full-resolution L; Lab -> sRGB, clipped"
)

# An NIR recipe's graph (model.target=lab / rgb): what gancolor.color.nir_to_net makes
# of an NIR file in, the whole colour image in the target's space (color.encode) out.
NIR_INPUT_DOC = (
    "nir: float32 (N, 1, H, W), any N, H, W; a near-infrared image v over its depth's full range "
    "(8-bit v/255, 16-bit v/65535; an RGB file with equal channels: their mean/255), scaled as 2v - 1 "
    "([0, 1] -> [-1, 1])"
)
NIR_OUTPUT_DOCS = {
    "lab": "lab: float32 (N, 3, H, W), the size of the input; CIE L*, a*, b* scaled as L/50 - 1, a/110, b/110, "
           "clamped to [-1, 1]",
    "rgb": "rgb: float32 (N, 3, H, W), the size of the input; sRGB (IEC 61966-2-1 transfer curve) v in [0, 1] "
           "scaled as 2v - 1, clamped to [-1, 1]",
}
NIR_USE_DOC = (
    "gancolor.colorize: an NIR file (single-channel 8- or 16-bit) at full resolution, scaled as the input says; a copy "
    "resized (area when shrinking, bilinear when enlarging) so its short side is render_size goes through the graph; "
    "the colour image it gives is upsampled bilinearly (align_corners=false) to full size, {decode}, clipped to [0, 1]"
)
NIR_DECODE = {"lab": "Lab -> sRGB", "rgb": "sRGB = (v + 1) / 2"}
# A hints model's graph (experiment=pix2pix_hints, cic with model.hints) takes a second input.
HINTS_DOC = (
    "hints: float32 (N, 3, H, W), the size of L, as gancolor.hints.hint_maps draws them: channels 0-1 "
    "a hint's a*, b* scaled as ab/110 where the user put it, channel 2 a mask (1 there, 0 elsewhere); "
    "all zeros: automatic colourisation"
)


@dataclass
class Options:
    ckpt: Path
    output: Path
    format: str = "onnx"
    overwrite: bool = False
    temperature: float | None = None
    opset: int = 17
    use_ema: bool = True

    @classmethod
    def from_config(cls, cfg) -> "Options":
        fmt = str(cfg.format).lower()
        if fmt not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
        output = Path(str(cfg.output)).expanduser()
        if fmt == "onnx" and output.suffix.lower() != ".onnx":
            raise ConfigError(f"output: an ONNX export must be named *.onnx (colorize tells it by that), got {output}")
        if fmt == "torchscript" and output.suffix.lower() == ".onnx":
            raise ConfigError(f"output: {output} is named .onnx but format=torchscript (use .ts, or format=onnx)")
        return cls(
            ckpt=Path(str(cfg.ckpt)).expanduser(),
            output=output,
            format=fmt,
            overwrite=bool_option("overwrite", cfg.overwrite),
            temperature=temperature_option(cfg.get("temperature")),
            opset=int_option("opset", cfg.opset, 7),
            use_ema=bool_option("use_ema", cfg.get("use_ema", True)),
        )


class ColorizeGraph(nn.Module):
    """A recipe's `colorize` as a module to trace: normalised L -> normalised ab (an NIR
    recipe: NIR -> the colour image), clamped as colorize's Colorizer clamps it.

    Only the generator nets are registered (the traced weights); the recipe itself is
    held outside the module tree, so what else it owns (discriminators, CycleGAN's
    image pools) is no part of the graph."""

    def __init__(self, recipe) -> None:
        super().__init__()
        recipe = _with_plain_weights(recipe)
        self.nets = nn.ModuleList(recipe.generator_modules())
        self.takes_hints = takes_hints(recipe)  # a second input: the hint maps (HINTS_DOC)
        object.__setattr__(self, "recipe", recipe)

    def forward(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        ab = self.recipe.colorize(L, hints) if self.takes_hints else self.recipe.colorize(L)
        return ab.float().clamp(-1.0, 1.0)

    def example_inputs(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs of `shape` to trace or check with: L in [-1, 1], and for a hints model a
        few hint pixels of random colour (all-zero maps would leave the hint path untested)."""
        L = torch.rand(shape, generator=generator) * 2 - 1
        if not self.takes_hints:
            return (L,)
        mask = (torch.rand(shape, generator=generator) < 0.05).float()
        ab = (torch.rand((shape[0], 2, *shape[2:]), generator=generator) * 2 - 1) * mask
        return L, torch.cat([ab, mask], 1)


def _with_plain_weights(recipe):
    """A copy of `recipe`, in eval mode, whose generators hold their weights as plain
    tensors: a parametrised weight (spectral norm, DeOldify's decoder) is replaced by
    the value it has in eval mode, which is all a deployed graph needs (and ONNX has no
    op for the power iteration's vdot)."""
    from torch.nn.utils import parametrize

    recipe = copy.deepcopy(recipe).eval()
    for net in recipe.generator_modules():
        for module in net.modules():
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return recipe


# -- what the file says about itself ---------------------------------------------------------


def metadata(recipe, ckpt: dict, source: Path) -> dict[str, str]:
    """The graph's contract, as string key/values (ONNX metadata_props; TorchScript JSON)."""
    from gancolor.inference import net_stride, trained_size

    meta = {
        "gancolor_format": METADATA_FORMAT,
        "gancolor_version": __version__,
        "recipe": str(recipe.name),
        "generator": ", ".join(type(net).__name__ for net in recipe.generator_modules()),
        **_contract(recipe),
        "render_size": str(trained_size(ckpt)),
        "stride": str(net_stride(recipe)),
        "padding": "inside the graph: reflected at the bottom/right to a multiple of stride, cropped back",
        "source": source.name,
        # Which weights the graph holds: colorize cannot choose once they are inside.
        "weights": "EMA (the generators' exponential moving average)" if getattr(recipe, "uses_ema", False) else "raw",
    }
    if ckpt.get("global_step") is not None:
        meta["global_step"] = str(ckpt["global_step"])
    meta.update(_recipe_metadata(recipe))
    if takes_hints(recipe):
        meta["hints"] = HINTS_DOC
    return meta


def _contract(recipe) -> dict[str, str]:
    """What goes in and comes out, and how colorize uses it: gray L -> ab, or for an NIR
    recipe NIR -> the colour image in its target space (input_kind and target say which,
    for OnnxRecipe to rebuild the NIR path)."""
    if getattr(recipe, "input_kind", "gray") != "nir":
        return {"input_kind": "gray", "input": INPUT_DOC, "output": OUTPUT_DOC, "lab": LAB_DOC, "use": USE_DOC}
    target = recipe.target
    contract = {"input_kind": "nir", "target": target, "input": NIR_INPUT_DOC, "output": NIR_OUTPUT_DOCS[target]}
    if target == "lab":
        contract["lab"] = LAB_DOC
    contract["use"] = NIR_USE_DOC.format(decode=NIR_DECODE[target])
    return contract


def _recipe_metadata(recipe) -> dict[str, str]:
    """What a recipe bakes into its graph, so a reader knows what it is getting."""
    from gancolor.models.cic import CIC
    from gancolor.models.cyclegan import CycleGAN
    from gancolor.models.stargan import StarGAN

    if isinstance(recipe, CIC):
        t = float(recipe.temperature)
        how = f"annealed mean (Zhang et al. 2016, eq. 5) at temperature {t:g}" if t > 0 else "mode (temperature 0)"
        return {
            "decoding": f"{how} over {recipe.num_bins} ab bins, inside the graph",
            "temperature": f"{t:g}",
            "bins": str(recipe.num_bins),
        }
    if isinstance(recipe, CycleGAN):
        inside = "" if recipe.color_space == "lab" else " (the gray L -> sRGB and sRGB -> ab conversions are inside the graph)"
        return {
            "direction": "gray -> colour: generator G_AB (domain A gray, B colour)" + inside,
            "color_space": recipe.color_space,
        }
    if isinstance(recipe, StarGAN):
        target = "none (every attribute off)" if recipe.target is None else recipe.domains[recipe.target]
        return {
            "target_domain": target + " (its domain code is a constant of the graph)",
            "domains": ", ".join(recipe.domains),
            "domain_mode": recipe.domain_mode,
            "color_space": recipe.color_space,
        }
    return {}


# -- writing -------------------------------------------------------------------------------


def trace(graph: ColorizeGraph) -> torch.jit.ScriptModule:
    """The graph traced once; both formats are written from this one trace."""
    example = graph.example_inputs(TRACE_SHAPE)
    graph.eval()
    # The tracer warns about every Python value it freezes; check_export, which runs
    # the file on sizes the trace did not see, is what says whether any of that matters.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(graph, example, check_trace=False)


def torchscript_bytes(traced: torch.jit.ScriptModule, meta: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": it still works
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta, indent=1)})
    return buffer.getvalue()


def onnx_bytes(traced: torch.jit.ScriptModule, meta: dict[str, str], opset: int = 17) -> bytes:
    """The ONNX file of a traced graph, with `meta` as its metadata_props.

    torch's TorchScript-based exporter (dynamo=False): it keeps H and W symbolic through
    the nets' padding arithmetic, where the torch.export-based one specialises them."""
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    input_name, output_name = graph_names(meta["input_kind"], meta.get("target"))  # _contract always says the kind
    inputs = [input_name, HINTS_INPUT_NAME] if "hints" in meta else [input_name]
    examples = tuple(torch.zeros((TRACE_SHAPE[0], HINT_CHANNELS if name == HINTS_INPUT_NAME else 1, *TRACE_SHAPE[2:])) for name in inputs)
    with warnings.catch_warnings(), _native_stdout_silenced():
        warnings.simplefilter("ignore")  # its own deprecation notice
        torch.onnx.export(
            traced, examples, buffer, dynamo=False, opset_version=opset,
            input_names=inputs, output_names=[output_name],
            dynamic_axes={**{name: axes for name in inputs}, output_name: axes},
        )
    return _with_onnx_metadata(buffer.getvalue(), meta)


def export_bytes(graph: ColorizeGraph, fmt: str, meta: dict[str, str], opset: int = 17) -> bytes:
    """The exported file's bytes, metadata included."""
    traced = trace(graph)
    return torchscript_bytes(traced, meta) if fmt == "torchscript" else onnx_bytes(traced, meta, opset)


@contextlib.contextmanager
def _native_stdout_silenced():
    """File descriptor 1 to /dev/null for the block: on failure, torch's ONNX exporter
    prints the whole traced graph from C++ (its log switch is on whatever it is set
    to), which would bury the one line the user is owed."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _with_onnx_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"gancolor {meta['recipe']} colouriser: {meta['input']} -> {meta['output']}"
    model.producer_name, model.producer_version = "gancolor", __version__
    return model.SerializeToString()


def exported_runner(data: bytes, fmt: str):
    """A function running the exported file on its inputs (L (N, 1, H, W), and a hints
    model's hint maps) with its own runtime: onnxruntime, or torch.jit."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": it still works
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")

        def run_torchscript(*inputs: torch.Tensor) -> torch.Tensor:
            # Unoptimised: the graph's values are what is checked, and the profiling
            # executor's first runs (compiling it for these sizes) cost seconds.
            with torch.no_grad(), torch.jit.optimized_execution(False):
                return module(*inputs)

        return run_torchscript
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    # By the file's own names: "L" (and "hints") -> "ab", or for an NIR graph "nir" -> "lab" / "rgb".
    names, output_name = [i.name for i in session.get_inputs()], session.get_outputs()[0].name
    return lambda *inputs: torch.from_numpy(session.run([output_name], {n: x.numpy() for n, x in zip(names, inputs)})[0])


def run_exported(data: bytes, fmt: str, *inputs: torch.Tensor) -> torch.Tensor:
    """The exported file run once on its inputs by its own runtime."""
    return exported_runner(data, fmt)(*inputs)


def check_export(graph: ColorizeGraph, data: bytes, fmt: str, name: str) -> float:
    """The largest difference between the file and PyTorch on CHECK_SHAPES and a uniform
    L; a ConfigError when it is over TOLERANCE (a size or value the trace froze into the
    graph, or a net whose output on a flat photo is rounding amplified)."""
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    run = exported_runner(data, fmt)
    checks = [(shape, graph.example_inputs(shape, generator), "") for shape in CHECK_SHAPES]
    flat = tuple(torch.zeros_like(x) for x in graph.example_inputs(CHECK_SHAPES[-1]))  # hints: none, automatic
    checks.append((CHECK_SHAPES[-1], (flat[0] + UNIFORM_L, *flat[1:]), "uniform "))
    for shape, inputs, kind in checks:
        with torch.no_grad():
            expected = graph(*inputs)
        got = run(*inputs)
        size = kind + "x".join(map(str, shape[2:]))
        if got.shape != expected.shape:
            raise ConfigError(f"cannot export {name} as {fmt}: the graph gives {tuple(got.shape)} for a {size} input, not {tuple(expected.shape)}")
        diff = float((got - expected).abs().max())
        if not diff <= TOLERANCE:
            raise ConfigError(f"cannot export {name} as {fmt}: the graph differs from PyTorch by {diff:.2g} on a {size} input (tolerance {TOLERANCE:g})")
        worst = max(worst, diff)
    return worst


def write_atomic(data: bytes, path: Path) -> None:
    """Write `data` to `path` through a temporary file, so no half-written file is left."""
    from gancolor.colorize import _file_mode

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # the permissions any new file gets, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _needs_onnx() -> None:
    missing = [name for name in ("onnx", "onnxruntime") if not _importable(name)]
    if missing:
        raise ConfigError(f"format=onnx needs {' and '.join(missing)}: pip install 'gancolor[onnx]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def export(options: Options, say=print) -> str:
    """Write the export `options` asks for; returns the line that says what was written."""
    from gancolor.colorize import apply_temperature
    from gancolor.inference import run_checkpoint

    if options.output.is_dir():
        raise ConfigError(f"output {options.output} is a folder; name the file to write")
    if options.output.exists() and not options.overwrite:
        raise ConfigError(f"output {options.output} already exists (overwrite=true replaces it)")
    if options.format == "onnx":
        _needs_onnx()
    source = run_checkpoint(options.ckpt, say)
    recipe, ckpt = load_model(source, "cpu", exported=False, use_ema=options.use_ema)
    apply_temperature(recipe, options.temperature)
    graph = ColorizeGraph(recipe).eval()
    name = f"{recipe.name} ({', '.join(type(n).__name__ for n in recipe.generator_modules())})"
    try:
        data = export_bytes(graph, options.format, metadata(recipe, ckpt, source), options.opset)
    except Exception as exc:  # noqa: BLE001 - a tracer's refusal, of any kind, is one line for the user
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"cannot export {name} as {options.format}: {text}") from None
    worst = check_export(graph, data, options.format, name)
    write_atomic(data, options.output)
    sizes = ", ".join("x".join(map(str, s[2:])) for s in CHECK_SHAPES) + " and a uniform " + "x".join(map(str, CHECK_SHAPES[-1][2:]))
    return (
        f"gancolor: exported {name} -> {options.output} ({options.format}, {len(data) / 1e6:.1f} MB"
        f"{', inputs L and hints' if takes_hints(recipe) else ''}"
        f"{', EMA weights (use_ema=false exports the raw ones)' if getattr(recipe, 'uses_ema', False) else ''}); "
        f"matches PyTorch {'exactly' if worst == 0 else f'to {worst:.1g}'} at {sizes}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_command("export", argv, path_keys=frozenset({"ckpt", "output"}), usage=__doc__ or "")
    started = time.perf_counter()
    try:
        line = export(Options.from_config(cfg), say=lambda m: print(m, file=sys.stderr, flush=True))
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    print(f"{line} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
