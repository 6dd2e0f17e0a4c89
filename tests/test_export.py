"""python -m gancolor.export: every generator kind as ONNX and TorchScript, checked
against PyTorch on a size the export never saw; the ONNX files run with onnxruntime
alone; colorize runs an ONNX export as it runs the checkpoint."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, shrink, tiny_checkpoint
from omegaconf import OmegaConf
from PIL import Image

from gancolor import colorize, export
from gancolor.build import build_recipe

# Each generator kind, as the recipe that uses it; tiny nets (tests/helpers.py).
KINDS = {
    "unet": ["model=pix2pix", "generator=unet"],
    "resnet": ["model=pix2pix", "generator=resnet"],
    # The DeOldify options: spectral norm's parametrised weights must become plain ones.
    "dynamic_unet": ["model=pix2pix", "generator=dynamic_unet", "generator.encoder.name=test_resnet",
                     "generator.self_attention=true", "generator.spectral_norm=true"],
    "cic": ["model=cic"],  # decoding from the bins, at the temperature, inside the graph
    "stargan": ["model=stargan"],  # the target domain's code inside the graph, RGB <-> Lab too
    "cyclegan": ["model=cyclegan", "model.color_space=rgb"],  # gray -> colour, through RGB
}
ODD = (1, 1, 45, 71)
# A flat gray photo's L (export.UNIFORM_L): instance norms over zero-variance maps made a
# ResNet generator's output there rounding amplified, different in every runtime.
FLAT = torch.full(ODD, export.UNIFORM_L)
flats: dict[str, torch.Tensor] = {}  # kind -> PyTorch's ab for FLAT, filled by `exported`


def tiny_recipe(kind: str, seed: int = 0):
    cfg = shrink(compose(*KINDS[kind], "logger=none"))
    torch.manual_seed(seed)
    recipe = build_recipe(cfg).eval()
    with torch.no_grad():  # BatchNorm statistics other than the initial 0 / 1, so they are tested too
        for module in recipe.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return cfg, recipe


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread):
    """kind -> (L, PyTorch's ab, {format: exported bytes}), with the ONNX files on disk."""
    folder = tmp_path_factory.mktemp("exports")
    flats.clear()
    L = torch.rand(ODD, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = {}
    for kind in KINDS:
        cfg, recipe = tiny_recipe(kind)
        with torch.no_grad():
            expected = recipe.colorize(L).float().clamp(-1, 1)
            flat = recipe.colorize(FLAT).float().clamp(-1, 1)
        meta = export.metadata(recipe, {"config": OmegaConf.to_container(cfg, resolve=True)}, Path(f"{kind}.pt"))
        traced = export.trace(export.ColorizeGraph(recipe))  # once for both, as export_bytes would
        files = {"onnx": export.onnx_bytes(traced, meta), "torchscript": export.torchscript_bytes(traced, meta)}
        (folder / f"{kind}.onnx").write_bytes(files["onnx"])
        out[kind] = (L, expected, files)
        flats[kind] = flat
    return folder, out


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_exports_match_pytorch_on_an_odd_size(exported, kind, fmt):
    _, results = exported
    L, expected, files = results[kind]
    got = export.run_exported(files[fmt], fmt, L)
    assert got.shape == expected.shape == (1, 2, 45, 71)
    assert float((got - expected).abs().max()) <= 1e-4
    assert float(expected.abs().max()) > 1e-3  # a net that outputs colour, not a trivially equal zero
    assert float((export.run_exported(files[fmt], fmt, FLAT) - flats[kind]).abs().max()) <= 1e-4


def test_the_export_check_refuses_a_graph_that_disagrees_on_a_flat_input(one_thread):
    """A CycleGAN generator with torch's own InstanceNorm2d (as before nets.layers'
    exact one): on random L the ONNX file matches PyTorch, on a uniform L its output is
    rounding amplified and does not; the exporter's check says so and writes nothing."""
    from gancolor.nets.layers import InstanceNorm2d

    cfg, recipe = tiny_recipe("cyclegan")
    for module in list(recipe.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, InstanceNorm2d):
                setattr(module, name, torch.nn.InstanceNorm2d(child.num_features, affine=child.affine))
    graph = export.ColorizeGraph(recipe).eval()
    meta = export.metadata(recipe, {"config": OmegaConf.to_container(cfg, resolve=True)}, Path("cyclegan.pt"))
    with pytest.raises(export.ConfigError, match=r"^cannot export cg as onnx: the graph differs from PyTorch by .* on a uniform 83x30 input"):
        export.check_export(graph, export.export_bytes(graph, "onnx", meta), "onnx", "cg")


def test_onnx_files_run_with_onnxruntime_alone(exported):
    """No gancolor and no torch in the process that runs them: only onnxruntime and numpy."""
    folder, results = exported
    for kind, (L, _, _) in results.items():
        np.save(folder / f"{kind}_L.npy", L.numpy())
    script = (
        "import sys\n"
        "sys.modules['gancolor'] = None; sys.modules['torch'] = None  # any import of them fails\n"
        "import json, pathlib, numpy as np, onnxruntime as ort\n"
        "folder = pathlib.Path(sys.argv[1]); report = {}\n"
        "for path in sorted(folder.glob('*.onnx')):\n"
        "    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])\n"
        "    meta = session.get_modelmeta().custom_metadata_map\n"
        "    L = np.load(folder / f'{path.stem}_L.npy')\n"
        "    np.save(folder / f'{path.stem}_ab.npy', session.run(['ab'], {'L': L})[0])\n"
        "    report[path.stem] = meta\n"
        "print(json.dumps(report))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert sorted(report) == sorted(KINDS)
    for kind, (_, expected, _) in results.items():
        ab = np.load(folder / f"{kind}_ab.npy")
        assert np.abs(ab - expected.numpy()).max() <= 1e-4
        meta = report[kind]
        assert meta["gancolor_format"] == export.METADATA_FORMAT and "L/50 - 1" in meta["input"] and "ab/110" in meta["output"]
    assert report["cic"]["temperature"] == "0.38" and "annealed mean" in report["cic"]["decoding"]
    assert report["stargan"]["target_domain"].startswith("color")
    assert report["cyclegan"]["direction"].startswith("gray -> colour")


def test_torchscript_carries_its_metadata(exported):
    _, results = exported
    extra = {export.TORCHSCRIPT_METADATA: ""}
    torch.jit.load(io.BytesIO(results["cic"][2]["torchscript"]), _extra_files=extra)
    meta = json.loads(extra[export.TORCHSCRIPT_METADATA])
    assert meta["recipe"] == "cic" and meta["bins"] == "261" and meta["render_size"] == "32"


# -- the commands ------------------------------------------------------------------------------


def photo_file(folder: Path, photos) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "astronaut.png"
    Image.fromarray(photos[0]).resize((71, 45), Image.Resampling.BOX).save(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_colorize_runs_an_onnx_export_as_it_runs_the_checkpoint(ckpt, tmp_path, photos, capsys, one_thread):
    onnx_file = tmp_path / "tiny.onnx"
    onnx_file.write_bytes(b"an older export")
    assert export.main([f"ckpt={ckpt}", f"output={onnx_file}", "overwrite=true"]) == 0
    line = capsys.readouterr().out
    assert f"-> {onnx_file} (onnx" in line and "matches PyTorch" in line
    photo = photo_file(tmp_path / "in", photos)
    results = {}
    for name, model in (("pt", ckpt), ("onnx", onnx_file)):
        out = tmp_path / f"out_{name}.png"
        assert colorize.main([f"ckpt={model}", f"input={photo}", f"output={out}", "progress_bar=false"]) == 0
        results[name] = np.asarray(Image.open(out)).astype(int)
    assert results["pt"].shape == results["onnx"].shape == (45, 71, 3)
    assert np.abs(results["pt"] - results["onnx"]).max() <= 1  # one 8-bit level of rounding at most
    gray = np.asarray(Image.open(photo).convert("L"))
    assert np.abs(results["onnx"] - gray[..., None]).max() > 2  # coloured, not the gray input back


def one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gancolor: error: "), err
    return err[0]


def test_export_mistakes_are_one_line_and_lose_nothing(ckpt, tmp_path, capsys):
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    cases = [
        ([f"ckpt={ckpt}", f"output={existing}"], "already exists (overwrite=true replaces it)"),
        ([f"ckpt={ckpt}", f"output={tmp_path / 'm.ts'}"], "must be named *.onnx"),
        ([f"ckpt={ckpt}", f"output={tmp_path / 'm.onnx'}", "format=tflite"], "format must be one of onnx, torchscript"),
        ([f"ckpt={tmp_path / 'none.pt'}", f"output={tmp_path / 'm.onnx'}"], "checkpoint not found"),
        ([f"ckpt={ckpt}", f"output={tmp_path / 'm.onnx'}", "temperature=0.2"], "temperature applies to model=cic"),
        ([f"ckpt={ckpt}", f"output={tmp_path / 'm.onnx'}", "colour=1"], "unknown argument"),
        ([f"ckpt={tmp_path / 'model.onnx'}", f"output={tmp_path / 'm.onnx'}"], "is already an exported graph"),
        # What the exporter cannot do is refused, not written: ONNX slices by a size
        # computed in the graph only from opset 10 on.
        ([f"ckpt={ckpt}", f"output={tmp_path / 'm.onnx'}", "opset=9"], "cannot export pix2pix (UNetGenerator) as onnx: "),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as info:
            export.main(args)
        assert info.value.code == 2 and message in one_error(capsys), args
    assert existing.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no other file, temporary or not


def test_colorize_refuses_what_it_must_not_run(exported, tmp_path, capsys, photos):
    folder, results = exported
    script = tmp_path / "cic.ts"
    script.write_bytes(results["cic"][2]["torchscript"])
    photo = photo_file(tmp_path / "in", photos)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(results["unet"][2]["onnx"][:2000])  # a truncated download
    cases = [
        ([f"ckpt={script}"], "is a TorchScript file, a program that gancolor does not run"),
        ([f"ckpt={broken}"], f"cannot read ONNX file {broken}: "),
        ([f"ckpt={folder / 'cic.onnx'}", "temperature=0.5"], "temperature is part of an exported graph (cic.onnx decodes at 0.38)"),
        ([f"ckpt={folder / 'unet.onnx'}", "temperature=0.5"], "temperature applies to model=cic checkpoints; this one is pix2pix"),
        ([f"ckpt={photo}"], "is not a checkpoint file"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as info:
            colorize.main([*args, f"input={photo}", f"output={tmp_path / 'out'}"])
        assert info.value.code == 2 and message in one_error(capsys), args
    assert not (tmp_path / "out").exists()


def test_an_export_says_it_holds_ema_weights_and_onnx_refuses_use_ema_false(ckpt, tmp_path, capsys, photos, one_thread):
    """An export holds one set of weights (the EMA ones where the checkpoint has them):
    use_ema=false given with it would be silently ignored, so it is refused, in one line,
    by colorize, evaluate and the app; export itself takes use_ema=false for raw weights."""
    from gancolor import evaluate
    from gancolor.app import load_app
    from gancolor.checkpoint import atomic_save, load_checkpoint
    from gancolor.errors import ConfigError

    state = load_checkpoint(ckpt)
    state["ema"] = {"generator": {k.removeprefix("generator."): v + 0.01 if v.is_floating_point() else v
                                  for k, v in state["nets"].items() if k.startswith("generator.")}}
    with_ema = atomic_save(state, tmp_path / "ema.pt")
    lines = {}
    for flag in ("true", "false"):
        assert export.main([f"ckpt={with_ema}", f"output={tmp_path / f'{flag}.onnx'}", f"use_ema={flag}"]) == 0
        lines[flag] = capsys.readouterr().out
    assert "EMA weights" in lines["true"] and "EMA" not in lines["false"]
    assert (tmp_path / "true.onnx").read_bytes() != (tmp_path / "false.onnx").read_bytes()
    assert "EMA weights" not in (export.main([f"ckpt={ckpt}", f"output={tmp_path / 'plain.onnx'}"]), capsys.readouterr().out)[1]

    onnx_file = tmp_path / "true.onnx"
    photo = photo_file(tmp_path / "in", photos)
    message = "use_ema=false: true.onnx is an exported graph with its weights inside"
    with pytest.raises(SystemExit) as info:
        colorize.main([f"ckpt={onnx_file}", f"input={photo}", f"output={tmp_path / 'out'}", "use_ema=false"])
    assert info.value.code == 2 and message in one_error(capsys)
    with pytest.raises(SystemExit) as info:
        evaluate.main([f"ckpt={onnx_file}", f"data.root={photo.parent}", f"output={tmp_path / 'eval'}", "use_ema=false"])
    assert info.value.code == 2 and message in one_error(capsys)
    with pytest.raises(ConfigError, match="use_ema=false"):
        load_app(onnx_file, tmp_path / "app", device="cpu", use_ema=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()
