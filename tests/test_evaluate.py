"""python -m gancolor.evaluate: metrics.json, report.html, comparison of checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor.evaluate import default_output, main
from helpers import header_only_png, tiny_checkpoint

RENDER = 32  # tiny_checkpoint's training size


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[Path]:
    """Two tiny pix2pix checkpoints with different random weights, in run-folder layout."""
    root = tmp_path_factory.mktemp("runs")
    return [
        tiny_checkpoint(root / f"run{seed}" / "checkpoints" / "last.pt", seed=seed, epoch=seed, global_step=seed)
        for seed in (0, 1)
    ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three colour photos (crops of scikit-image's), one grayscale, one broken file, and
    the header of one too large."""
    from skimage import data

    root = tmp_path_factory.mktemp("val")
    for name, image in [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee())]:
        Image.fromarray(image[::4, ::4]).save(root / f"{name}.png")
    Image.fromarray(data.camera()[::8, ::8]).save(root / "gray.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    header_only_png(root / "huge.png", 12000, 12000)  # 144 MP: over max_pixels, under Pillow's refusal
    return root


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory) -> Path:
    from safetensors.torch import save_file
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("w") / "alexnet features.safetensors"
    save_file(state, str(path))
    return path


def test_two_checkpoints_give_one_comparison(ckpts, photos, lpips_weights, tmp_path, capsys):
    out = tmp_path / "eval"
    missing = tmp_path / "no-inception.pth"
    code = main([
        f"ckpt={ckpts[0]}", f"ckpt={ckpts[1]}", f"data.root={photos}", f"output={out}",
        "data.image_size=48", "num_samples=2", "progress_bar=false",
        f"lpips.weights={lpips_weights}", f"fid.weights={missing}",
    ])
    assert code == 0
    captured = capsys.readouterr()
    assert "gancolor: skipped" in captured.err and "broken.jpg" in captured.err
    assert "1 grayscale photo(s) skipped" in captured.err
    assert f"gancolor: skipped {photos / 'huge.png'}: 12000x12000 = 144.0 MP is over the limit of 100 MP (max_pixels)" in captured.err
    assert "3 files skipped: 1 grayscale, 1 unreadable, 1 too large" in captured.err
    assert "DecompressionBomb" not in captured.err

    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 3
    assert [c["ckpt"] for c in report["checkpoints"]] == [str(p) for p in ckpts]
    for entry in report["checkpoints"]:
        m = entry["metrics"]
        assert 0 < m["psnr"] < 100 and 0 < m["ssim"] <= 1 and m["mae"] > 0 and m["mse"] > 0
        assert 0 <= m["hist_intersection_a"] <= 1 and 0 <= m["hist_intersection_b"] <= 1
        assert m["colorfulness_ratio"] == pytest.approx(m["colorfulness"] / m["colorfulness_true"])
        assert isinstance(m["lpips"], float) and m["lpips"] > 0
        assert m["fid"] == f"unavailable: weights not found at {missing} (set fid.weights=PATH)"
        assert entry["render_size"] == RENDER
        assert [row["path"] for row in entry["per_image"]] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert report["checkpoints"][0]["metrics"] != report["checkpoints"][1]["metrics"]
    assert report["skipped"]["grayscale"] == [str(photos / "gray.png")]

    html = (out / "report.html").read_text()
    assert html.count("<img ") == 2 * 4  # 2 photos x (gray | output 1 | output 2 | truth)
    assert "unavailable: weights not found at" in html and "LPIPS" in html and "HI a" in html
    assert "run0" in captured.out and "run1" in captured.out  # the terminal table


def test_checkpoints_whose_last_parts_agree_are_told_apart(ckpts, photos, tmp_path, capsys):
    # Two runs of the same name in different sweeps: runs/a/run/checkpoints/last.pt, runs/b/...
    import shutil

    from gancolor.evaluate import hint_curve_figure

    copies = []
    for sweep, ckpt in zip("ab", ckpts):
        copy = tmp_path / "runs" / sweep / "run" / "checkpoints" / "last.pt"
        copy.parent.mkdir(parents=True)
        copies.append(shutil.copyfile(ckpt, copy))
    out = tmp_path / "eval"
    code = main([f"ckpt=[{copies[0]},{copies[1]}]", f"data.root={photos}", f"output={out}", "data.max_images=1",
                 "num_samples=1", "progress_bar=false"])
    assert code == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.endswith(tuple("0123456789a"))]
    assert rows == ["a/run/checkpoints/last.pt", "b/run/checkpoints/last.pt"]
    html = (out / "report.html").read_text()
    assert "output: a/run/checkpoints/last.pt" in html and "output: b/run/checkpoints/last.pt" in html

    # The hints chart keys its lines by these names: one name for two runs would draw one line.
    curve = [{"points": n, "psnr": 20.0 + n, **{c: 0.5 for c in ("ssim", "mae", "colorfulness_ratio",
             "colorfulness_ratio_per_photo", "hist_intersection_a", "hist_intersection_b")}} for n in (0, 1)]
    results = [{"ckpt": str(c), "hint_curve": curve} for c in copies]
    _, chart = hint_curve_figure(results)
    assert chart.count("<polyline") == 2
    assert ">a/run/checkpoints/last.pt<" in chart and ">b/run/checkpoints/last.pt<" in chart


def test_one_checkpoint_writes_into_its_run_folder(ckpts, photos, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    assert default_output([ckpts[0]]) == ckpts[0].parent.parent / "eval"
    assert default_output(ckpts) == Path("eval")
    code = main([f"ckpt=[{ckpts[0]}]", f"data.root={photos}", "data.max_images=1", "num_samples=1", "progress_bar=false"])
    assert code == 0
    report = json.loads((ckpts[0].parent.parent / "eval" / "metrics.json").read_text())
    metrics = report["checkpoints"][0]["metrics"]
    assert report["num_images"] == 1
    # Default weights: torchvision's cache, which is empty here: no download, a note.
    assert metrics["lpips"].startswith("unavailable: weights not found at " + str(tmp_path / "empty-torch-home"))
    assert metrics["fid"].startswith("unavailable: weights not found at")


def test_identical_colours_score_perfectly_through_the_whole_path(photos, tmp_path, monkeypatch):
    """A 'model' that returns the true colours must get SSIM 1, HI 1 and capped PSNR:
    checks that evaluate compares what it should with what it should."""
    import gancolor.evaluate as evaluate
    from gancolor import color
    from gancolor.inference import Colorizer

    truth_ab = {}
    original_prepare = Colorizer.prepare

    def prepare(self, pixels, alpha=None):
        prepared = original_prepare(self, pixels, alpha)
        rgb = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
        truth_ab["ab"] = torch.nn.functional.interpolate(
            color.rgb_to_lab_normalized(color.uint8_to_float(rgb))[1], size=prepared.small.shape[-2:], mode="area"
        )
        return prepared

    monkeypatch.setattr(Colorizer, "prepare", prepare)
    monkeypatch.setattr(Colorizer, "predict", lambda self, smalls: [truth_ab["ab"]])
    options = evaluate.Options(
        ckpts=[_fake_ckpt(tmp_path)], root=photos, image_size=40, render_size=40, output=tmp_path / "e",
        progress_bar=False, lpips_weights=None, fid_weights=None,
    )
    report = evaluate.evaluate(options, say=lambda m: None)
    m = report["checkpoints"][0]["metrics"]
    # ab reaches the net's resolution (40 px short side = the photo's): exact up to 8-bit rounding.
    assert m["ssim"] > 0.99 and m["psnr"] > 40 and m["mae"] < 0.005
    assert m["hist_intersection_a"] > 0.9 and m["hist_intersection_b"] > 0.9
    assert m["colorfulness_ratio"] == pytest.approx(1.0, abs=0.02)
    assert m["lpips"] == "unavailable: turned off (lpips.weights=null)"


def _fake_ckpt(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "fake.pt")


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.root=x"], "missing argument: ckpt=..."),
        (["ckpt=a.pt"], "missing argument: data.root=..."),
        (["ckpt=a.pt", "data.root=/no/such/folder"], "checkpoint not found: a.pt"),
        (["ckpt=a.pt", "data.root=x", "data.image_size=-1"], "data.image_size must be auto, an integer >= 1 or null, got -1"),
        (["ckpt=a.pt", "data.root=x", "data.image_size=abc"], "data.image_size must be auto, an integer >= 1 or null, got 'abc'"),
        (["ckpt=a.pt", "data.root=x", "metric=psnr"], "unknown argument 'metric'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gancolor: error: ") and message in lines[0]


def test_missing_data_folder_is_one_line(ckpts, tmp_path, capsys):
    (tmp_path / "a-file.png").write_bytes(b"")
    for root, message in ((tmp_path / "nothing", "data.root: folder not found: "), (tmp_path / "a-file.png", "data.root: not a folder: ")):
        with pytest.raises(SystemExit) as info:
            main([f"ckpt={ckpts[0]}", f"data.root={root}", f"output={tmp_path / 'e'}"])
        assert info.value.code == 2
        assert f"{message}{root}" in capsys.readouterr().err


def test_a_folder_holding_a_training_split_is_scored_whole_with_a_note(ckpts, tmp_path, capsys):
    """Training's layout (root/train, root/val): evaluate scores what it is given, and says
    that the training images are among them and which folder holds the rest."""
    from skimage import data

    for part, image in (("train", data.astronaut()), ("val", data.chelsea())):
        (tmp_path / "set" / part).mkdir(parents=True)
        Image.fromarray(image[::4, ::4]).save(tmp_path / "set" / part / f"{part}.png")
    args = [f"ckpt={ckpts[0]}", "num_samples=1", "progress_bar=false", "lpips.weights=null", "fid.weights=null"]
    assert main([*args, f"data.root={tmp_path / 'set'}", f"output={tmp_path / 'whole'}"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "holds train/" in line]
    assert notes == [f"gancolor: note: {tmp_path / 'set'} holds train/: every image under it is scored, training images "
                     f"included; data.root={tmp_path / 'set' / 'val'} scores the held-out part alone"]
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["num_images"] == 2

    assert main([*args, f"data.root={tmp_path / 'set' / 'val'}", f"output={tmp_path / 'val'}"]) == 0
    assert "holds train/" not in capsys.readouterr().err
    assert json.loads((tmp_path / "val" / "metrics.json").read_text())["num_images"] == 1


def test_metrics_json_and_the_report_record_the_decoding_settings(ckpts, photos, tmp_path, capsys):
    """use_ema, temperature and render_size are in metrics.json (as asked, and what each
    checkpoint ran with) and in the report's notes: two runs that differ only in them
    must be told apart from their files."""
    out = tmp_path / "eval"
    assert main([f"ckpt={ckpts[0]}", f"data.root={photos}", f"output={out}", "data.max_images=1", "num_samples=1",
                 "progress_bar=false", "use_ema=false", "render_size=40"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert (report["use_ema"], report["temperature"], report["render_size"], report["tta"]) == (False, None, 40, "none")
    entry = report["checkpoints"][0]
    assert (entry["uses_ema"], entry["temperature"], entry["render_size"]) == (False, None, 40)
    html = (out / "report.html").read_text()
    assert "Settings: use_ema=false (EMA weights for 0 of 1 checkpoint(s)), render_size=40, tta=none, precision=32." in html

    assert main([f"ckpt={ckpts[0]}", f"data.root={photos}", f"output={out}", "data.max_images=1", "num_samples=1",
                 "progress_bar=false", "tta=flip"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert (report["use_ema"], report["render_size"], report["checkpoints"][0]["render_size"]) == (True, None, RENDER)
    assert report["tta"] == "flip" and ", tta=flip, " in (out / "report.html").read_text()
    assert f"render_size=each checkpoint&#x27;s training resolution ({RENDER})" in (out / "report.html").read_text()


def test_the_report_says_which_ssim_and_keeps_file_names_readable():
    """The SSIM legend names what metrics.ssim runs (kornia's), not torchmetrics; the sample
    grid's file names wrap between words where they must, never a character or two a line
    (break-all in a column the images squeezed), and keep a readable minimum width."""
    import re

    from gancolor.report import Report, render

    photo = np.zeros((8, 8, 3), np.uint8)
    html = render(Report(title="t", columns=["ssim"], rows=[("a.pt", {"ssim": 0.5})], grid_header=["gray", "output", "truth"],
                         grid=[("holiday 2019/a very long file name.jpg", [photo, photo, photo])]))
    assert "kornia.metrics.ssim: 11x11 Gaussian window, sigma 1.5" in html and "torchmetrics" not in html
    caption_style = re.search(r"th\.cap \{([^}]*)\}", html).group(1)
    assert "break-all" not in caption_style and "min-width: 8em" in caption_style
    assert '<th class="cap">holiday 2019/a very long file name.jpg</th>' in html


def test_short_names_keep_an_absolute_paths_leading_slash():
    from gancolor.evaluate import short_names

    assert short_names(["/tmp/x/nir.onnx"]) == ["/tmp/x/nir.onnx"]
    assert short_names(["/srv/tmp/x/nir.onnx"]) == ["tmp/x/nir.onnx"]
    assert short_names(["runs/a/checkpoints/last.pt", "runs/b/checkpoints/last.pt"]) == ["a/checkpoints/last.pt", "b/checkpoints/last.pt"]
    assert short_names(["/a/x/y/z.pt", "/b/x/y/z.pt"]) == ["/a/x/y/z.pt", "/b/x/y/z.pt"]
