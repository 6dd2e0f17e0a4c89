"""NIR -> colour (data=nir, model.target=lab): pairs of synthetic NIR images made from
real photos (helpers.synthetic_nir: a fixed channel mix under a gamma) and the photos
themselves. The loader pairs and crops both alike, a file without its partner is named,
a tiny pix2pix trains on NIR in this process and its checkpoint colourises an NIR file
of odd size into an RGB image of that size; a colour photo given to it is one line.
evaluate scores its colourisations of NIR files against their RGB partners exactly as
gancolor.metrics scores colorize's outputs, and its ONNX and TorchScript exports colour
NIR files as the checkpoint does."""

from __future__ import annotations

import io
import json
import logging
import shutil
import warnings
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gancolor.build import build, build_recipe
from gancolor.colorize import main as colorize
from gancolor.data.images import load_image
from gancolor.data.nir import NIRDataModule, load_nir
from gancolor.errors import ConfigError, DataError
from gancolor.evaluate import main as evaluate
from gancolor.export import TORCHSCRIPT_METADATA
from gancolor.export import main as export
from gancolor.inference import Colorizer
from gancolor.loggers import Logger
from gancolor.metrics import image_metrics, summarize
from gancolor.models.base import check_input_kind
from helpers import compose, save_checkpoint, shrink, synthetic_nir, tiny_checkpoint, write_nir_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, photos):
    return write_nir_pairs(tmp_path_factory.mktemp("nir"), photos)


def module(**options) -> NIRDataModule:
    return NIRDataModule(**{"image_size": 32, "batch_size": 4, "num_workers": 0, "val_fraction": 0.25, **options})


def test_the_loader_pairs_and_crops_nir_and_rgb_alike(pairs):
    data = module(root=pairs)
    data.setup()
    assert (data.train_size, data.val_size) == (3, 1)
    agreement, flipped_agreement = [], []
    for seed in range(3):  # several draws of crops and flips
        data.train_loader().sampler.set_epoch(seed)
        for batch in data.train_loader():
            for rgb, nir in zip(batch["rgb"], batch["nir"]):
                # The NIR of the cropped photo is the cropped NIR (up to resampling).
                expected = torch.from_numpy(synthetic_nir(rgb.permute(1, 2, 0).numpy()) / 255.0).float()
                agreement.append((nir[0] - expected).abs().mean())
                flipped_agreement.append((nir[0] - expected.flip(-1)).abs().mean())
    assert max(agreement) < 0.02
    assert min(flipped_agreement) > 3 * max(agreement)
    batch = data.device_batch(next(iter(data.val_loader())), "cpu")
    assert batch["nir"].shape[1:] == (1, 32, 32) and batch["nir"].min() >= -1 and batch["nir"].max() <= 1
    assert batch["rgb"].shape[1:] == (3, 32, 32)


def test_sixteen_bit_nir_is_scaled_by_its_full_range(tmp_path, photos):
    eight, sixteen = (write_nir_pairs(tmp_path / f"b{bits}", photos[:1], bits=bits) for bits in (8, 16))
    a, b = (load_nir(folder / "scenes" / "scene_0_nir.png") for folder in (eight, sixteen))
    assert Image.open(sixteen / "scenes" / "scene_0_nir.png").mode.startswith("I")
    assert np.abs(a - b).max() <= 0.5 / 255 + 1e-6 and b.max() > 0.5


def test_two_folders_pair_by_name_and_a_missing_partner_is_named(tmp_path, photos, caplog):
    for i, photo in enumerate(photos):
        rgb = np.asarray(Image.fromarray(photo).resize((40, 36)))
        (tmp_path / "nir" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "rgb" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "rgb" / "sub" / f"{i:04d}.jpg")
        Image.fromarray(synthetic_nir(rgb, 16)).save(tmp_path / "nir" / "sub" / f"{i:04d}.png")
    Image.fromarray(synthetic_nir(rgb)).save(tmp_path / "nir" / "sub" / "lonely.png")
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        data = module(nir_root=tmp_path / "nir", rgb_root=tmp_path / "rgb")
        data.setup()
    assert data.train_size + data.val_size == len(photos)
    warnings = [r.getMessage() for r in caplog.records if "without a partner" in r.getMessage()]
    assert len(warnings) == 1 and "lonely.png (no RGB partner)" in warnings[0]

    # Nothing pairs up: one error naming a file, not a guessed layout.
    for path in (tmp_path / "rgb" / "sub").iterdir():
        path.rename(path.with_name("other_" + path.name))
    with pytest.raises(DataError, match=r"no NIR/RGB pairs .* e\.g\. nir_root/sub/"):
        module(nir_root=tmp_path / "nir", rgb_root=tmp_path / "rgb").setup()


def test_side_by_side_names_the_file_without_partner(tmp_path, photos, caplog):
    folder = write_nir_pairs(tmp_path, photos)
    (folder / "scenes" / "scene_1_rgb.png").unlink()
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        data = module(root=folder)
        data.setup()
    assert data.train_size + data.val_size == len(photos) - 1
    assert sum("scenes/scene_1_nir.png (no RGB partner)" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError, match="data.root=DIR"):
        module().setup()


def test_the_log_counts_pairs_and_the_unpaired_warning_the_files_it_names(tmp_path, photos, caplog):
    scenes = write_nir_pairs(tmp_path, photos) / "scenes"
    Image.open(scenes / "scene_0_nir.png").save(scenes / "scene_0_nir.tiff")  # two NIR files for one scene
    (scenes / "scene_1_rgb.png").unlink()
    with caplog.at_level(logging.INFO, logger="gancolor.data"):
        module(root=tmp_path).setup()
    messages = [r.getMessage() for r in caplog.records]
    unpaired = [m for m in messages if "without a partner" in m]
    assert len(unpaired) == 1 and unpaired[0].startswith("data: 3 file(s) under") and unpaired[0].count("scenes/scene_") == 3
    assert "scenes/scene_0_nir.tiff (one of 2 NIR files of one scene)" in unpaired[0]
    assert f"data: 2 usable NIR/RGB pairs under {tmp_path}" in messages
    assert f"data: 1 training and 1 validation NIR/RGB pairs from {tmp_path}" in messages
    assert not [m for m in messages if "colour images" in m]


def test_pairs_are_sized_as_decoded_upright(tmp_path, photos):
    # A portrait NIR stored landscape with an EXIF quarter turn pairs with its portrait RGB;
    # one whose sizes match only before that turn is left out, named, never a failure later.
    folder = write_nir_pairs(tmp_path, photos)
    nir, rgb = folder / "scenes" / "scene_0_nir.png", folder / "scenes" / "scene_0_rgb.png"
    twin_nir, twin_rgb = folder / "scenes" / "twin_nir.png", folder / "scenes" / "twin_rgb.png"
    shutil.copy(nir, twin_nir)
    shutil.copy(rgb, twin_rgb)
    turned = Image.open(nir).transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that turns it back upright
    turned.save(nir, exif=exif)
    np.testing.assert_array_equal(load_image(nir).pixels, np.asarray(Image.open(twin_nir)))
    Image.open(twin_nir).save(twin_nir, exif=exif)  # the tag on an upright file: sideways once decoded

    from gancolor.data.nir import check_pairs, find_pairs

    checked = check_pairs(find_pairs(folder)[0])
    assert (nir, rgb) in checked.kept
    assert [(path, kind) for path, kind, _ in checked.left_out] == [(twin_nir, "sizes differ")]


class Rows(Logger):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics, step=step))


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory, one_thread):
    """A tiny pix2pix trained on NIR in this process: (its config, data, recipe, run
    folder, the metrics it logged)."""
    run = tmp_path_factory.mktemp("nir_run") / "run"
    cfg = shrink(compose("experiment=nir_pix2pix", f"data.root={pairs}", "logger=none", "trainer.log_every_n_steps=1",
                         "trainer.num_samples=2", "trainer.pretrain_epochs=1", "trainer.max_epochs=2", "data.repeats=2"))
    trainer, data, recipe = build(cfg.trainer, "trainer"), build(cfg.data, "data"), build_recipe(cfg)
    data.setup()
    check_input_kind(recipe, data)
    torch.manual_seed(0)
    logger = Rows()
    trainer.fit(recipe, data, run, logger, OmegaConf.to_container(cfg, resolve=True))
    return SimpleNamespace(cfg=cfg, data=data, recipe=recipe, run=run, rows=logger.rows, ckpt=run / "checkpoints" / "last.pt")


def test_pix2pix_trains_on_nir_and_colourises_an_odd_sized_nir_file(trained, tmp_path, photos, capsys):
    logged = {key for row in trained.rows for key in row}
    assert {"train/G/pixel", "train/D/loss", "train/G/L1", "val/psnr", "val/ssim", "val/colorfulness_ratio"} <= logged
    assert any(key.startswith("val/hist") for key in logged)
    assert (trained.run / "samples" / "epoch_0002.png").is_file()

    # A gray recipe refuses NIR data, and the NIR recipe gray data, before any work.
    with pytest.raises(ConfigError, match="data=nir"):
        check_input_kind(build_recipe(shrink(compose("model=pix2pix"))), trained.data)
    with pytest.raises(ConfigError, match="model.target=lab"):
        check_input_kind(trained.recipe, build(shrink(compose("data=folder", "data.root=x")).data, "data"))

    ckpt = trained.ckpt
    odd = np.asarray(Image.fromarray(photos[1]).resize((45, 37)))
    Image.fromarray(synthetic_nir(odd, 16)).save(tmp_path / "odd_nir.png")
    assert colorize([f"ckpt={ckpt}", f"input={tmp_path / 'odd_nir.png'}", f"output={tmp_path / 'out'}", "progress_bar=false"]) == 0
    result = Image.open(tmp_path / "out" / "odd_nir.png")
    assert (result.mode, result.size) == ("RGB", (45, 37))
    assert np.asarray(result).std(axis=(0, 1)).max() > 0  # a picture, not one flat colour

    # A colour photo given to the NIR model: one line, and the output already written kept.
    Image.fromarray(odd).save(tmp_path / "photo.png")
    capsys.readouterr()
    assert colorize([f"ckpt={ckpt}", f"input={tmp_path / 'photo.png'}", f"output={tmp_path / 'out'}", "progress_bar=false"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gancolor: skipped") and "single-channel NIR" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["odd_nir.png"]


# -- evaluate and export of an NIR checkpoint ------------------------------------------------


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["experiment=nir_pix2pix", "model=cyclegan"], "but this model=cyclegan colourises gray ones: NIR needs model=pix2pix"),
        (["experiment=nir_pix2pix", "model=cic"], "but this model=cic colourises gray ones: NIR needs model=pix2pix"),
        (["model=stargan", "data=nir"], "but this model=stargan colourises gray ones: NIR needs model=pix2pix"),
        (["experiment=nir_pix2pix", "model.target=ab"], "but model.target=ab colourises gray ones: set model.target=lab"),
        (["model.target=rgb", "data=folder"], "model.target=rgb predicts the whole colour image from a near-infrared input"),
    ],
)
def test_a_command_line_that_mixes_nir_and_gray_is_refused_with_the_mismatch_first(overrides, says):
    # Before Hydra starts the job: the recipe's constructor would fail first on what the
    # mismatch leaves (model.target for CycleGAN, ${data.domains}, D's channels), saying less.
    from gancolor.commandline import config_problem

    _, problem = config_problem([*overrides, "data.root=/nonexistent/nir"])
    assert problem is not None and says in problem


@pytest.fixture(scope="module")
def val_pairs(tmp_path_factory, photos):
    """Held-out NIR/RGB pairs of odd sizes, one NIR 16-bit, in the EPFL layout, with one
    file of each kind the pairing leaves out: a pair of two sizes, a gray RGB, an NIR
    in colour, an NIR without partner. Returns (folder, the usable (nir, rgb) pairs)."""
    folder = tmp_path_factory.mktemp("nir_val")
    usable = []
    for i, (photo, size, bits) in enumerate(zip(photos[:3], [(45, 37), (52, 33), (39, 48)], [8, 16, 8])):
        rgb = np.asarray(Image.fromarray(photo[40:, 60:]).resize(size, Image.Resampling.BOX))
        usable.append((folder / "val" / f"{i:04d}_nir.png", folder / "val" / f"{i:04d}_rgb.png"))
        usable[-1][0].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_nir(rgb, bits)).save(usable[-1][0])
        Image.fromarray(rgb).save(usable[-1][1])
    rgb = np.asarray(Image.fromarray(photos[3]).resize((40, 32)))
    bad = folder / "bad"
    bad.mkdir()
    Image.fromarray(rgb).save(bad / "sizes_rgb.png")
    Image.fromarray(synthetic_nir(rgb[:, :30])).save(bad / "sizes_nir.png")
    Image.fromarray(rgb.mean(axis=2).astype(np.uint8)).convert("RGB").save(bad / "gray_rgb.png")
    Image.fromarray(synthetic_nir(rgb)).save(bad / "gray_nir.png")
    Image.fromarray(rgb).save(bad / "colour_rgb.png")
    Image.fromarray(rgb[:, ::-1]).save(bad / "colour_nir.png")
    Image.fromarray(synthetic_nir(rgb)).save(bad / "lonely_nir.png")
    return folder, usable


def colourised(ckpt, nir_files, folder) -> list[np.ndarray]:
    """What `colorize ckpt=CKPT` writes for each NIR file, one call for all of them."""
    inputs = folder / "in"
    inputs.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(nir_files):
        shutil.copy(path, inputs / f"{i:04d}_{path.name}")
    assert colorize([f"ckpt={ckpt}", f"input={inputs}", f"output={folder / 'out'}", "progress_bar=false"]) == 0
    return [np.asarray(Image.open(folder / "out" / f"{i:04d}_{p.name}")) for i, p in enumerate(nir_files)]


def test_evaluate_scores_nir_pairs_as_colorize_colours_them(trained, val_pairs, tmp_path, capsys):
    folder, usable = val_pairs
    assert evaluate([f"ckpt={trained.ckpt}", f"data.root={folder}", f"output={tmp_path / 'eval'}", "num_samples=2",
                     "progress_bar=false", "lpips.weights=null", "fid.weights=null"]) == 0
    captured = capsys.readouterr()
    # Each file the pairing leaves out is said once, on the line of its kind.
    unpaired = [line for line in captured.err.splitlines() if "without a partner" in line]
    assert len(unpaired) == 1 and "bad/lonely_nir.png (no RGB partner)" in unpaired[0]
    left_out = [line for line in captured.err.splitlines() if "not used:" in line and "pair(s)" in line]
    assert len(left_out) == 1 and left_out[0].startswith("gancolor: 3 pair(s)")
    for name in ("sizes_nir.png (30x32 px, its RGB partner 40x32 px)", "gray_rgb.png (gray", "colour_nir.png (NIR in colour)"):
        assert name in left_out[0]

    # The metrics of colorize's own outputs against the RGB partners, by gancolor.metrics.
    outputs = colourised(trained.ckpt, [nir for nir, _ in usable], tmp_path / "colorize")
    per_image = defaultdict(list)
    for out, (_, rgb) in zip(outputs, usable):
        truth = np.asarray(Image.open(rgb))
        assert out.shape == truth.shape
        as_tensor = [torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (out, truth)]
        for key, value in image_metrics(*as_tensor).items():
            per_image[key].append(value)
    expected = summarize(per_image)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (report["input_kind"], report["num_images"], report["image_size"]) == ("nir", 3, None)
    entry = report["checkpoints"][0]
    assert [row["path"] for row in entry["per_image"]] == [str(nir.relative_to(folder)) for nir, _ in usable]
    assert [row["psnr"] for row in entry["per_image"]] == pytest.approx([float(v) for v in per_image["psnr"]], abs=1e-4)
    for key in ("psnr", "ssim", "mae", "colorfulness_ratio", "hist_intersection_a", "hist_intersection_b"):
        assert entry["metrics"][key] == pytest.approx(expected[key], abs=1e-4), key
    assert 5 < entry["metrics"]["psnr"] < 60
    assert len(report["skipped"]["left_out"]) == 3 and len(report["skipped"]["unpaired"]) == 1
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "NIR (input)" in html and html.count("<img ") == 2 * 3  # 2 pairs x (NIR | output | truth)
    assert f"3 NIR/RGB pairs from {folder}" in html and "last.pt" in captured.out  # the terminal table

    # The other layout of data=nir: the same names under two folders, the same scores.
    for nir, rgb in usable:
        for src, side in ((nir, "nir"), (rgb, "rgb")):
            dst = tmp_path / side / "val" / src.name.replace(f"_{side}", "")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    (tmp_path / "nir" / "train").mkdir()  # training's layout: scored whole, with a note
    capsys.readouterr()
    assert evaluate([f"ckpt={trained.ckpt}", f"data.nir_root={tmp_path / 'nir'}", f"data.rgb_root={tmp_path / 'rgb'}",
                     f"output={tmp_path / 'eval2'}", "progress_bar=false", "lpips.weights=null", "fid.weights=null"]) == 0
    assert f"gancolor: note: {tmp_path / 'nir'} holds train/: every image under it is scored, training images included\n" in capsys.readouterr().err
    second = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert second["checkpoints"][0]["metrics"]["psnr"] == pytest.approx(entry["metrics"]["psnr"], abs=1e-6)
    assert second["nir_root"] == str(tmp_path / "nir")

    # data.image_size=N: both images of a pair resized to short side N first.
    assert evaluate([f"ckpt={trained.ckpt}", f"data.root={folder / 'val'}", "data.image_size=20", f"output={tmp_path / 'eval3'}",
                     "progress_bar=false", "lpips.weights=null", "fid.weights=null"]) == 0
    third = json.loads((tmp_path / "eval3" / "metrics.json").read_text())
    assert third["image_size"] == 20 and third["num_images"] == 3
    assert third["checkpoints"][0]["metrics"]["psnr"] != pytest.approx(entry["metrics"]["psnr"], abs=1e-3)


def test_evaluate_mistakes_with_nir_are_one_line(trained, val_pairs, tmp_path, capsys, small_photo_folder):
    folder, _ = val_pairs
    gray = tiny_checkpoint(tmp_path / "gray.pt")
    common = [f"output={tmp_path / 'eval'}", "progress_bar=false", "lpips.weights=null", "fid.weights=null"]
    cases = [
        ([f"ckpt={gray}", f"data.root={folder}"], "holds NIR/RGB pairs"),
        ([f"ckpt={gray}", f"data.nir_root={folder}", f"data.rgb_root={folder}"], "data.nir_root / data.rgb_root give NIR/RGB pairs"),
        ([f"ckpt={trained.ckpt}", f"data.root={small_photo_folder}"], "no NIR/RGB pairs (NAME_nir.* next to NAME_rgb.*)"),
        ([f"ckpt={trained.ckpt}", f"ckpt={gray}", f"data.root={folder}"], "evaluate checkpoints of one kind per call"),
        ([f"ckpt={trained.ckpt}", f"data.root={folder}", "hints.points=[0,1]"], "hints.points: "),
        ([f"ckpt={trained.ckpt}", f"data.nir_root={folder}"], "data.nir_root and data.rgb_root go together"),
        ([f"ckpt={trained.ckpt}", f"data.root={folder}", f"data.nir_root={folder}", f"data.rgb_root={folder}"], "not both"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as stopped:
            evaluate([*args, *common])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert stopped.value.code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith("gancolor: error: ") and message in err[0], (args, err)
    assert not (tmp_path / "eval").exists()


def ts_recipe(data: bytes):
    """A TorchScript NIR export as a recipe for the Colorizer, from its metadata alone
    (colorize itself never runs TorchScript files: they are programs)."""
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": it still works
        module = torch.jit.load(io.BytesIO(data), _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_METADATA])

    class Exported(torch.nn.Module):
        input_kind, target, stride = meta["input_kind"], meta["target"], int(meta["stride"])

        def colorize(self, x):
            return module(x)

        def generator_modules(self):
            return [self]

    return Exported(), meta


@pytest.mark.parametrize("target", ["lab", "rgb"])
def test_nir_exports_colourise_nir_files_as_the_checkpoint(target, val_pairs, tmp_path, capsys):
    import onnx

    # Untrained, its weights drawn wider than training's init: a few steps of training
    # give an almost flat image, where a wrong scaling of the NIR input could hide.
    cfg = shrink(compose("experiment=nir_pix2pix", f"model.target={target}", "data.root=x", "generator.init_gain=0.1"))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / f"{target}.pt", cfg, build_recipe(cfg))
    nir_files = [nir for nir, _ in val_pairs[1]]
    reference = colourised(ckpt, nir_files, tmp_path / "pt")

    assert export([f"ckpt={ckpt}", f"output={tmp_path / 'nir.onnx'}"]) == 0
    assert export([f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'nir.ts'}"]) == 0
    assert "matches PyTorch" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "nir.onnx")).metadata_props}
    graph = onnx.load(str(tmp_path / "nir.onnx")).graph
    assert ([i.name for i in graph.input], [o.name for o in graph.output]) == (["nir"], [target])
    assert (meta["input_kind"], meta["target"]) == ("nir", target)
    assert meta["input"].startswith("nir: float32 (N, 1, H, W)") and "2v - 1" in meta["input"]
    assert meta["output"].startswith(f"{target}: float32 (N, 3, H, W)")
    assert ("L/50 - 1, a/110, b/110" if target == "lab" else "scaled as 2v - 1") in meta["output"]

    # colorize runs the ONNX file as it runs the checkpoint.
    onnx_out = colourised(tmp_path / "nir.onnx", nir_files, tmp_path / "onnx")
    # The TorchScript file, through the same Colorizer with what its metadata says.
    recipe, ts_meta = ts_recipe((tmp_path / "nir.ts").read_bytes())
    assert {k: ts_meta[k] for k in ("input_kind", "target", "input", "output")} == {k: meta[k] for k in ("input_kind", "target", "input", "output")}
    colorizer = Colorizer(recipe, int(ts_meta["render_size"]))
    ts_out = [colorizer(load_image(path).pixels) for path in nir_files]
    for ref, via_onnx, via_ts in zip(reference, onnx_out, ts_out):
        assert ref.shape == via_onnx.shape == via_ts.shape
        assert np.abs(ref.astype(int) - via_onnx).max() <= 1 and np.abs(ref.astype(int) - via_ts).max() <= 1
    assert min(float(r.std(axis=(0, 1)).max()) for r in reference) > 3  # pictures, not one flat colour

    # evaluate takes the ONNX file beside its checkpoint, as an NIR model too.
    assert evaluate([f"ckpt={ckpt}", f"ckpt={tmp_path / 'nir.onnx'}", f"data.root={val_pairs[0] / 'val'}", f"output={tmp_path / 'eval'}",
                     "progress_bar=false", "lpips.weights=null", "fid.weights=null"]) == 0
    scores = [c["metrics"]["psnr"] for c in json.loads((tmp_path / "eval" / "metrics.json").read_text())["checkpoints"]]
    assert scores[0] == pytest.approx(scores[1], abs=0.05)
