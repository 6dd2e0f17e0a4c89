"""What `ckpt=` names for colorize (and export): a checkpoint, or an ONNX export run by
onnxruntime behind the interface a recipe gives the Colorizer.

The Colorizer asks a recipe for `colorize(L) -> ab` and `generator_modules()` (whose
`stride` it pads to); `OnnxRecipe` answers both from the file gancolor.export wrote,
so an ONNX export goes through exactly the same colour conversion, render size,
padding, resizing back to full resolution and output writing as the checkpoint. An
export of an NIR recipe (metadata input_kind: nir, target: lab / rgb) gives the
Colorizer the same `input_kind` and `target` the recipe has, so NIR files go through
the checkpoint's NIR path.

A TorchScript export is refused here: it is a program, and gancolor never runs code
from a file it is given (checkpoints load with weights_only=True for the same reason).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gancolor.errors import CheckpointError, ConfigError
from gancolor.hints import HINT_CHANNELS

# The contract between gancolor.export and this runtime.
METADATA_FORMAT = "gancolor-colorize-graph/1"  # metadata key gancolor_format of every export
INPUT_NAME, OUTPUT_NAME = "L", "ab"  # a gray recipe's graph: normalised L in, ab out
HINTS_INPUT_NAME = "hints"  # a hints model's second input: the user's hint maps (gancolor.export.HINTS_DOC)
NIR_INPUT_NAME = "nir"  # an NIR recipe's graph: NIR in, the colour image in its target space ("lab" / "rgb") out
NIR_TARGETS = ("lab", "rgb")


def graph_names(input_kind: str = "gray", target: str | None = None) -> tuple[str, str]:
    """(input, output) names of an exported graph: what it takes and what it gives, so
    a reader of the file sees at once whether it is a gray or an NIR colouriser."""
    if input_kind == "nir":
        return NIR_INPUT_NAME, str(target)
    return INPUT_NAME, OUTPUT_NAME


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", exported: bool = True, use_ema: bool = True):
    """(recipe, checkpoint dict) for ckpt=PATH: an ONNX export (when `exported`) as an
    OnnxRecipe with a checkpoint-like dict giving its render size, else a gancolor
    checkpoint through checkpoint.load_recipe (its generators' EMA weights where it has
    them, unless not `use_ema`; an export holds whichever weights it was made from)."""
    from gancolor.checkpoint import load_recipe

    path = Path(path).expanduser()
    if path.suffix.lower() == ".onnx":
        if not exported:
            raise CheckpointError(f"{path} is already an exported graph: export needs the checkpoint it came from")
        if not use_ema:
            # The graph holds the weights it was exported with (the EMA ones where its
            # checkpoint had them); loading it anyway would ignore the option silently.
            raise ConfigError(
                f"use_ema=false: {path.name} is an exported graph with its weights inside; "
                "export the checkpoint again with use_ema=false, or use the checkpoint itself"
            )
        recipe = OnnxRecipe(path, device)
        return recipe, {"config": {"data": {"image_size": recipe.render_size}}}
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript file, a program that gancolor does not run: colourise with the checkpoint "
            "it came from, or with an ONNX export (python -m gancolor.export format=onnx)"
        )
    return load_recipe(path, device, use_ema=use_ema)


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save's zip (with code/ and constants.pkl), which a checkpoint never is."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("an .onnx ckpt runs with onnxruntime: pip install 'gancolor[onnx]'") from None
    return onnxruntime


class OnnxRecipe(nn.Module):
    """An ONNX export of gancolor.export, run by onnxruntime, as the Colorizer's recipe.

    It has no weights of its own, so `.to()`, `.eval()` and the Colorizer's CPU twin
    (a deep copy) are trivial; it runs on the CPU, or CUDA when onnxruntime has it
    and `device` is a GPU."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        super().__init__()
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file not found: {self.path}")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - truncated, not ONNX, unknown ops: all one line
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise CheckpointError(f"cannot read ONNX file {self.path}: {reason}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("gancolor_format") != METADATA_FORMAT:
            raise CheckpointError(f"{self.path} is an ONNX file that python -m gancolor.export did not write (no gancolor metadata)")
        self.input_kind = self.metadata.get("input_kind", "gray")  # exports written before NIR ones say nothing: gray
        if self.input_kind == "nir":
            self.target = self.metadata.get("target")
            if self.target not in NIR_TARGETS:
                raise CheckpointError(f"{self.path}: an NIR export with target {self.target!r}, not one of {', '.join(NIR_TARGETS)}")
        elif self.input_kind != "gray":
            raise CheckpointError(f"{self.path}: input_kind {self.input_kind!r} is not one this gancolor knows (gray, nir)")
        self.input_name, self.output_name = graph_names(self.input_kind, getattr(self, "target", None))
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        expected = [self.input_name, HINTS_INPUT_NAME] if "hints" in self.metadata else [self.input_name]
        if inputs != expected or self.output_name not in outputs:
            raise CheckpointError(f"{self.path}: expected inputs {expected} and output {self.output_name!r}, got {inputs} and {outputs}")
        # Not None for a hints model's export, as for its recipe (gancolor.hints.takes_hints).
        self.hints = self.metadata["hints"] if "hints" in self.metadata else None
        self.name = self.metadata.get("recipe", "onnx")
        self.stride = int(self.metadata.get("stride", 1))
        self.render_size = int(self.metadata.get("render_size", 256))
        # Which weights the graph holds, as its checkpoint's recipe says (None: an export
        # older than the "weights" metadata).
        self.uses_ema = self.metadata["weights"].startswith("EMA") if "weights" in self.metadata else None

    @property
    def temperature(self) -> float:
        if "temperature" not in self.metadata:
            raise AttributeError("temperature")  # not a CIC export: colorize says temperature does not apply
        return float(self.metadata["temperature"])

    @temperature.setter
    def temperature(self, value: float) -> None:
        raise ConfigError(
            f"temperature is part of an exported graph ({self.path.name} decodes at {self.metadata['temperature']}): "
            "export the checkpoint again with temperature=T"
        )

    @torch.no_grad()
    def colorize(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised L (N, 1, H, W) -> normalised ab (N, 2, H, W), on L's device; for an
        NIR export, NIR (N, 1, H, W) -> the colour image (N, 3, H, W) in its target space.
        `hints` (N, 3, H, W): a hints model's hint maps (None: none, automatic)."""
        if hints is not None and self.hints is None:
            raise ConfigError("this model was trained without hints (model.hints); it cannot take any")
        feed = {self.input_name: np.ascontiguousarray(L.detach().float().cpu().numpy())}
        if self.hints is not None:
            maps = hints if hints is not None else L.new_zeros((L.shape[0], HINT_CHANNELS, *L.shape[2:]))
            feed[HINTS_INPUT_NAME] = np.ascontiguousarray(maps.detach().float().cpu().numpy())
        ab = self.session.run([self.output_name], feed)[0]
        return torch.from_numpy(ab).to(L.device)

    def generator_modules(self) -> list[nn.Module]:
        return [self]  # for the Colorizer's stride

    def __deepcopy__(self, memo) -> "OnnxRecipe":
        return OnnxRecipe(self.path, "cpu")  # a session cannot be copied; the twin is on the CPU
