"""User hints (Zhang et al. 2017): simulated hints in training, the 4-channel generator,
and colorize with JSON points and scribbles.

The model test trains a tiny hints U-Net for a few seconds on images whose colours
cannot be told from their lightness (two halves of random chroma at two fixed
lightnesses), so only hints can tell the net the colour: on held-out images its ab
error inside the hinted half must fall as hints are added.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HINTS_SIZE, TINY_HINTS, compose, halves, tiny_checkpoint, trained_hints_model
from PIL import Image

from gancolor import color
from gancolor.build import build_recipe
from gancolor.colorize import main as colorize_main
from gancolor.errors import ConfigError
from gancolor.hints import HintPlanDataset, HintSimulation, hint_maps, input_channels

SIZE = HINTS_SIZE
HINTS_CFG = TINY_HINTS


# -- simulation -------------------------------------------------------------------------------
def test_hint_maps_hold_each_patch_mean_ab_and_a_mask():
    ab = torch.rand(2, 2, 12, 10) * 2 - 1
    plan = torch.tensor([[[1, 2, 3], [8, 5, 2], [0, 0, 0]], [[4, 4, 1], [0, 0, 0], [0, 0, 0]]])
    maps = hint_maps(ab, plan)
    assert maps.shape == (2, 3, 12, 10)
    for n in range(2):
        mask = torch.zeros(12, 10)
        for top, left, size in plan[n].tolist():
            if size:
                patch = (slice(top, top + size), slice(left, left + size))
                mask[patch] = 1
                mean = ab[n, :, patch[0], patch[1]].mean((1, 2))
                assert torch.allclose(maps[n, :2, patch[0], patch[1]], mean.view(2, 1, 1).expand(2, size, size), atol=1e-5)
        assert torch.equal(maps[n, 2], mask)
        assert torch.all(maps[n, :2][:, mask == 0] == 0)


def test_simulation_follows_the_paper_and_is_a_function_of_the_sample_seed():
    sim = HintSimulation()
    rng = np.random.default_rng(0)
    plans = [sim.draw(rng, 64, 48) for _ in range(2000)]
    counts = np.array([(p[:, 2] > 0).sum() for p in plans])
    assert abs((counts == 0).mean() - 1 / 8) < 0.02  # geometric from 0 with p = 1/8
    assert abs(counts.mean() - 7) < 0.5  # its mean (1 - p) / p
    patches = np.concatenate([p[p[:, 2] > 0] for p in plans])
    assert set(patches[:, 2]) == set(range(1, 10))
    assert (patches[:, 0] + patches[:, 2] <= 64).all() and (patches[:, 1] + patches[:, 2] <= 48).all()
    centre_rows = np.abs(patches[:, 0] + patches[:, 2] / 2 - 32) < 16  # within one sigma-ish of the centre
    assert centre_rows.mean() > 0.6  # Gaussian around the centre, not uniform (0.5)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return {"rgb": torch.zeros(3, 20, 20, dtype=torch.uint8), "path": str(index)}

    dataset = HintPlanDataset(Images(), sim)
    assert torch.equal(dataset[(1, 12345)]["hint_plan"], dataset[(1, 12345)]["hint_plan"])  # exact resume
    assert len({tuple(dataset[(0, seed)]["hint_plan"].flatten().tolist()) for seed in range(20)}) > 10


def test_hints_need_a_four_channel_generator():
    with pytest.raises(ConfigError, match="generator.in_channels=4"):
        build_recipe(compose(*HINTS_CFG, "generator.in_channels=1"))
    with pytest.raises(ConfigError, match="unknown key"):
        build_recipe(compose(*HINTS_CFG, "+model.hints.points=3"))


def test_a_pretrained_encoder_keeps_its_weights_and_hint_weights_start_at_zero(tmp_path):
    import timm
    from safetensors.torch import save_file

    from gancolor.nets.dynamic_unet import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(7)
    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "resnet10t.safetensors"))
    generator = build_recipe(compose(
        "experiment=pix2pix_hints", "generator=dynamic_unet", "generator.encoder.name=resnet10t",
        f"generator.encoder.weights={tmp_path / 'resnet10t.safetensors'}", "generator.decoder_width_mult=0.125",
        "data.image_size=32", "discriminator.ndf=4", "logger=none",
    )).generator
    assert input_channels(generator) == 4
    for key in ("conv1.0.weight", "layer4.0.conv2.weight"):
        assert torch.equal(generator.encoder.state_dict()[key], state[key]), key
    # The stem hands the encoder the ImageNet-normalised gray of L, exactly as an L-only
    # net's does; the hint channels add nothing until training teaches them to.
    std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
    assert torch.allclose(generator.stem.weight[:, 0].flatten(), 0.5 / std)
    assert torch.allclose(generator.stem.bias, (0.5 - mean) / std)
    assert not generator.stem.weight[:, 1:].any()


# -- the model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A tiny hints pix2pix G trained on simulated hints for a few seconds, and its checkpoint."""
    return trained_hints_model(tmp_path_factory.mktemp("hints") / "hints.pt")


def test_colours_move_toward_hints_on_held_out_images(trained):
    recipe, _ = trained
    L, ab = color.rgb_to_lab_normalized(halves(np.random.default_rng(1), 32, SIZE, SIZE))
    errors = []
    for n in (0, 1, 2, 4):
        rng = np.random.default_rng(5)
        plans = np.zeros((32, 4, 3), np.int32)
        for i in range(32):
            for k in range(n):  # 2 px hints anywhere in the left half
                plans[i, k] = (rng.integers(2, SIZE - 4), rng.integers(1, SIZE // 2 - 3), 2)
        with torch.no_grad():
            fake = recipe.colorize(L, hint_maps(ab, torch.from_numpy(plans)))
        errors.append(float((fake - ab)[:, :, 2:-2, 1 : SIZE // 2 - 1].abs().mean() * color.AB_SCALE))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[1] < 0.95 * errors[0] and errors[-1] < 0.8 * errors[0], errors


def lab_of(path: Path) -> np.ndarray:
    rgb = color.uint8_to_float(torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None])
    L, ab = color.rgb_to_lab_normalized(rgb)
    return torch.cat([(L + 1) * 50, ab * color.AB_SCALE], 1)[0].numpy()


def test_colorize_with_points_and_scribbles_at_full_resolution(trained, tmp_path, capsys):
    _, ckpt = trained
    height, width = 97, 61  # odd, and not the training size
    gray = halves(np.random.default_rng(2), 1, height, width, ab=np.zeros((1, 2, 2)))
    photo = tmp_path / "photo.png"
    Image.fromarray(color.float_to_uint8(gray)[0].permute(1, 2, 0).numpy()).save(photo)
    hint_ab = np.array([35.0, 40.0])  # a saturated orange, as a user would pick
    hint_rgb = color.float_to_uint8(halves(np.random.default_rng(0), 1, 1, 2, ab=np.tile(hint_ab, (1, 2, 1)).transpose(0, 2, 1)))
    hex_colour = "#%02x%02x%02x" % tuple(hint_rgb[0, :, 0, 0].tolist())  # orange at the left half's L
    (tmp_path / "points.json").write_text(json.dumps([{"x": 15, "y": 48, "color": hex_colour}, {"x": 20, "y": 30, "color": hex_colour}]))
    scribble = np.zeros((height, width, 4), np.uint8)
    scribble[40:56, 8:22] = (*hint_rgb[0, :, 0, 0].tolist(), 255)
    Image.fromarray(scribble).save(tmp_path / "scribble.png")

    outputs = {}
    for name, extra in (("none", []), ("points", [f"hints={tmp_path / 'points.json'}"]), ("scribble", [f"hints={tmp_path / 'scribble.png'}"])):
        outputs[name] = tmp_path / f"out_{name}.png"
        assert colorize_main([f"ckpt={ckpt}", f"input={photo}", f"output={outputs[name]}", *extra]) == 0
    gray_L = lab_of(photo)[0]
    for name, path in outputs.items():
        lab = lab_of(path)
        assert lab.shape[1:] == (height, width), name
        assert np.abs(lab[0] - gray_L).max() < 2.0, name  # the photo's own lightness, at full size
    near = (slice(40, 56), slice(8, 22))
    distance = {name: np.linalg.norm(lab_of(path)[1:, near[0], near[1]].mean((1, 2)) - hint_ab) for name, path in outputs.items()}
    assert distance["points"] < 0.8 * distance["none"] and distance["scribble"] < 0.8 * distance["none"], distance

    # A folder of inputs and a folder of hint files named like them; b has none.
    for name in ("a", "b"):
        (tmp_path / "inputs").mkdir(exist_ok=True)
        shutil.copy(photo, tmp_path / "inputs" / f"{name}.png")
    (tmp_path / "hint_files").mkdir()
    shutil.copy(tmp_path / "points.json", tmp_path / "hint_files" / "a.json")
    assert colorize_main([f"ckpt={ckpt}", f"input={tmp_path / 'inputs'}", f"output={tmp_path / 'outs'}", f"hints={tmp_path / 'hint_files'}"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "outs" / "a.png")), np.asarray(Image.open(outputs["points"])))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "outs" / "b.png")), np.asarray(Image.open(outputs["none"])))

    # Mistakes: one line each.
    capsys.readouterr()
    (tmp_path / "outside.json").write_text(json.dumps([{"x": width, "y": 3, "color": "#ff0000"}]))
    tiny = tiny_checkpoint(tmp_path / "plain.pt")
    for args, message in (
        ([f"ckpt={ckpt}", f"hints={tmp_path / 'outside.json'}"], "outside the 61x97 image"),
        ([f"ckpt={tiny}", f"hints={tmp_path / 'points.json'}"], "trained without hints"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            colorize_main([*args, f"input={photo}", f"output={tmp_path / 'bad.png'}", "overwrite=true"])
        assert exit_info.value.code != 0
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gancolor: error")]
        assert len(errors) == 1 and message in errors[0], errors


def test_an_onnx_export_takes_hints_as_the_checkpoint_does(trained, tmp_path, capsys):
    """gancolor.export gives a hints model's graph a second input, the hint maps: colorize
    runs the .onnx with and without a hints file as it runs the checkpoint."""
    import onnxruntime as ort

    from gancolor import export

    _, ckpt = trained
    onnx_file = tmp_path / "hints.onnx"
    assert export.main([f"ckpt={ckpt}", f"output={onnx_file}"]) == 0
    assert re.search(r"\(onnx, [\d.]+ MB, inputs L and hints\); matches PyTorch", capsys.readouterr().out)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["L", "hints"]
    assert session.get_modelmeta().custom_metadata_map["hints"].startswith("hints: float32 (N, 3, H, W)")

    height, width = 57, 83  # odd, and not the training size
    photo = tmp_path / "photo.png"
    Image.fromarray(color.float_to_uint8(halves(np.random.default_rng(3), 1, height, width))[0].permute(1, 2, 0).numpy()).save(photo)
    (tmp_path / "points.json").write_text(json.dumps([{"x": 12, "y": 20, "color": "#e07020"}, {"x": 15, "y": 40, "color": "#e07020"}]))
    outputs = {}
    for source in (ckpt, onnx_file):
        for name, extra in (("none", []), ("points", [f"hints={tmp_path / 'points.json'}"])):
            out = tmp_path / f"{source.suffix[1:]}_{name}.png"
            assert colorize_main([f"ckpt={source}", f"input={photo}", f"output={out}", "progress_bar=false", *extra]) == 0
            outputs[source.suffix, name] = np.asarray(Image.open(out), dtype=np.int16)
    for name in ("none", "points"):
        assert np.abs(outputs[".pt", name] - outputs[".onnx", name]).max() <= 1, name
    assert np.abs(outputs[".onnx", "points"] - outputs[".onnx", "none"]).max() > 10, "the hints change the colours"


def test_evaluate_reports_metrics_against_hints_sampled_from_the_truth(trained, tmp_path, capsys):
    """The paper's PSNR-vs-points curve (Zhang et al. 2017, fig. 4): with more hints taken
    from the photos' own colours, the colours come closer to the truth; the curve is in
    metrics.json, the terminal table, and plotted in report.html."""
    import gancolor.evaluate as evaluate

    _, ckpt = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, rgb in enumerate(color.float_to_uint8(halves(np.random.default_rng(7), 6, 24, 32))):
        Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(photos / f"{i}.png")
    out = tmp_path / "eval"
    args = [f"ckpt={ckpt}", f"data.root={photos}", "data.image_size=null", f"output={out}", "progress_bar=false", "lpips.weights=null", "fid.weights=null"]
    assert evaluate.main([*args, "hints.points=[16,0,4,1]"]) == 0
    terminal = capsys.readouterr().out
    curve = json.loads((out / "metrics.json").read_text())["checkpoints"][0]["hint_curve"]
    assert [row["points"] for row in curve] == [0, 1, 4, 16]
    automatic = json.loads((out / "metrics.json").read_text())["checkpoints"][0]["metrics"]
    assert curve[0]["psnr"] == automatic["psnr"]  # N = 0 is the automatic pass
    psnr = [row["psnr"] for row in curve]
    assert psnr[3] > psnr[0] + 1.0 and psnr[2] > psnr[0], psnr
    assert "hints sampled from the truth" in terminal and f"{psnr[3]:.4g}" in terminal
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 1 and html.count('class="series"') == 1 and "number of hints" in html
    plotted = html.split('class="series" points="')[0].rsplit("<polyline", 1)[0]  # the chart's four x ticks
    assert all(f">{n}</text>" in plotted for n in (0, 1, 4, 16))

    # The same seed gives the same curve; mistakes are one line each.
    assert evaluate.main([*args, f"output={tmp_path / 'again'}", "hints.points=[0,1,4,16]"]) == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["checkpoints"][0]["hint_curve"] == curve
    tiny = tiny_checkpoint(tmp_path / "plain.pt")
    capsys.readouterr()
    for extra, message in (([f"ckpt={tiny}", "hints.points=[0,2]"], "trained without hints"),
                           (["hints.points=[0,-1]"], "hints.points must be")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main([*args, *extra])
        assert exit_info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gancolor: error")]
        assert len(errors) == 1 and message in errors[0], errors


def test_a_bad_file_in_a_hints_folder_skips_only_its_photo(tmp_path, capsys, one_thread):
    """colorize over a folder with hints=FOLDER: a hints file that is not JSON, or whose
    point lies off its photo, is that photo's failure (one line, counted in the summary,
    exit 2 as for any skipped input); the photos before and after it are still done."""
    _, ckpt = trained_hints_model(tmp_path / "hints.pt", steps=0)  # untrained: only the plumbing matters
    gray = color.float_to_uint8(halves(np.random.default_rng(1), 1, 40, 30, ab=np.zeros((1, 2, 2))))[0].permute(1, 2, 0).numpy()
    (tmp_path / "in").mkdir()
    (tmp_path / "hint_files").mkdir()
    for name in ("a", "b", "c", "d"):
        Image.fromarray(gray).save(tmp_path / "in" / f"{name}.png")
    (tmp_path / "hint_files" / "a.json").write_text(json.dumps([{"x": 3, "y": 4, "color": "#ff0000"}]))
    (tmp_path / "hint_files" / "b.json").write_text("{not json")
    (tmp_path / "hint_files" / "c.json").write_text(json.dumps([{"x": 300, "y": 4, "color": "#ff0000"}]))
    capsys.readouterr()
    code = colorize_main([f"ckpt={ckpt}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                          f"hints={tmp_path / 'hint_files'}", "progress_bar=false"])
    out, err = capsys.readouterr()
    assert code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "d.png"]
    skipped = [line for line in err.splitlines() if line.startswith("gancolor: skipped")]
    assert len(skipped) == 2, err
    assert skipped[0].startswith(f"gancolor: skipped {tmp_path / 'in' / 'b.png'}: hints: cannot read {tmp_path / 'hint_files' / 'b.json'}")
    assert skipped[1].startswith(f"gancolor: skipped {tmp_path / 'in' / 'c.png'}: {tmp_path / 'hint_files' / 'c.json'}: point 0")
    assert "outside the 30x40 image" in skipped[1]
    assert "2 colourised" in out and "2 files skipped: 2 bad hints" in out

    # One photo and one hints file: still a bad argument, one line, before any output.
    with pytest.raises(SystemExit) as info:
        colorize_main([f"ckpt={ckpt}", f"input={tmp_path / 'in' / 'b.png'}", f"output={tmp_path / 'one.png'}",
                       f"hints={tmp_path / 'hint_files' / 'b.json'}", "progress_bar=false"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(errors) == 1 and "cannot read" in errors[0], errors
    assert not (tmp_path / "one.png").exists()
