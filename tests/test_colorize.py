"""python -m gancolor.colorize on every awkward kind of input, made inside the tests."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor import color
from gancolor.colorize import main
from gancolor.commandline import hydra_quoted
from gancolor.inference import Colorizer, render_shape
from helpers import header_only_png, tiny_checkpoint

RENDER = 32  # tiny_checkpoint's training size: every test runs the net at 32 px


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny pix2pix checkpoint (random weights) built in-process: what is tested here
    is the plumbing around the net, not the quality of its colours."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", epoch=1, global_step=1)


@pytest.fixture(scope="module")
def colorizer(ckpt) -> Colorizer:
    from gancolor.checkpoint import load_recipe

    recipe, _ = load_recipe(ckpt)
    return Colorizer(recipe, RENDER)


def colorize(ckpt, *args: str) -> int:
    return main([f"ckpt={ckpt}", "progress_bar=false", *args])


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Gray detail down to single pixels, over a smooth gradient."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(30, 220, width)[None, :] + np.linspace(-20, 20, height)[:, None]
    return np.clip(ramp + rng.normal(0, 25, (height, width)), 0, 255).astype(np.uint8)


def colour(height: int, width: int, seed: int = 0) -> np.ndarray:
    gray = texture(height, width, seed).astype(np.int16)
    return np.clip(np.stack([gray + 40, gray, gray - 40], axis=2), 0, 255).astype(np.uint8)


def lightness(rgb: np.ndarray) -> torch.Tensor:
    return color.rgb_to_lightness(color.uint8_to_float(torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1)[None]))


# -- the reusable function ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (37, 53), (120, 80), (97, 300)])
def test_any_size_keeps_the_original_full_resolution_lightness(colorizer, shape):
    gray = texture(*shape)
    out = colorizer(gray)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8
    # The net ran at 32 px; the result still carries every pixel of the input's L,
    # up to 8-bit rounding and the clipping of out-of-gamut colours.
    difference = (lightness(out) - colorizer.lightness(gray)).abs() * color.L_SCALE
    assert difference.mean() < 0.3 and difference.max() < 2.5


@pytest.mark.parametrize("shape", [(150, 200), (20, 30)])  # shrunk (area) and enlarged (bilinear)
def test_a_flat_photo_reaches_the_net_exactly_flat(colorizer, shape):
    """Resizing keeps a constant only to ~1e-8, and instance norms amplify that into colour
    noise that differs between PyTorch and onnxruntime: the net's copy must be exact."""
    small = colorizer.prepare(np.full(shape, 107, np.uint8)).small
    assert float(small.amax() - small.amin()) == 0.0 and small.shape[-2] != shape[0]


def test_render_shape_keeps_aspect_with_short_side_at_render_size():
    assert render_shape(4000, 6000, 256) == (256, 384)
    assert render_shape(6000, 4000, 256) == (384, 256)
    assert render_shape(10, 10, 256) == (256, 256)  # small inputs are enlarged to the trained scale
    assert render_shape(1, 1000, 32) == (32, 32000)


def test_rgb_input_colour_is_discarded_and_alpha_kept(colorizer):
    rgb = colour(40, 60)
    # The same lightness with no colour at all: it must colourise (nearly) the same,
    # whether given as RGB or as a one-channel gray image.
    gray_twin = colorizer.gray(colorizer.prepare(rgb))
    out = colorizer(rgb)
    assert np.abs(out.astype(int) - colorizer(gray_twin)).max() <= 3
    assert np.abs(out.astype(int) - colorizer(np.ascontiguousarray(gray_twin[..., 0]))).max() <= 3

    alpha = np.tile(np.arange(60, dtype=np.uint8)[None, :] * 4, (40, 1))
    rgba = colorizer(np.dstack([rgb, alpha]))
    assert rgba.shape == (40, 60, 4)
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    np.testing.assert_array_equal(rgba[..., :3], out)


def test_sixteen_bit_gray_uses_its_full_depth(colorizer):
    eight = texture(30, 40)
    sixteen = eight.astype(np.uint16) * 257  # the same picture at 16 bits
    np.testing.assert_array_equal(colorizer(sixteen), colorizer(eight))
    fine = sixteen + 100  # a change below one 8-bit level still reaches L
    assert not torch.equal(colorizer.lightness(fine), colorizer.lightness(sixteen))


# -- the command on awkward files ----------------------------------------------------


def _exif(orientation: int | None = None, make: str | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if make:
        exif[0x010F] = make
    return exif.tobytes()


def write_awkward_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Every kind of file the issue lists; returns name -> expected (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}

    def save(name: str, image: Image.Image, size: tuple[int, int] | None = None, **params) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **params)
        expected[name] = size or image.size

    save("gray8.png", Image.fromarray(texture(31, 45)))
    save("gray16.png", Image.fromarray(texture(30, 40).astype(np.uint16) * 257))
    save("gray16.tif", Image.fromarray(texture(21, 34).astype(np.uint16) * 257))
    save("rgb.jpg", Image.fromarray(colour(48, 64)), quality=90)
    rgba = np.dstack([colour(33, 50), np.tile(np.linspace(0, 255, 50).astype(np.uint8), (33, 1))])
    save("rgba.png", Image.fromarray(rgba))
    palette = Image.fromarray(colour(24, 36)).quantize(colors=16)
    palette.info["transparency"] = 0
    save("palette.png", palette, transparency=0)
    save("la.png", Image.fromarray(np.dstack([texture(20, 30), np.full((20, 30), 128, np.uint8)]), mode="LA"))
    save("cmyk.jpg", Image.fromarray(colour(26, 38)).convert("CMYK"), quality=90)
    save("cmyk.tif", Image.fromarray(colour(18, 28)).convert("CMYK"))
    save("photo.webp", Image.fromarray(colour(40, 30)), quality=90)
    save("photo.bmp", Image.fromarray(colour(17, 23)))
    # Stored 60 wide x 20 high, displayed upright (orientation 6) as 20 x 60.
    save("phone.jpg", Image.fromarray(colour(20, 60)), size=(20, 60), quality=90, exif=_exif(6, "gancolor-test"))
    save("old albums/vieille photo é 写真.png", Image.fromarray(texture(25, 35)))
    return expected


def test_every_awkward_input_is_colourised_at_its_own_size(tmp_path, ckpt, capsys):
    expected = write_awkward_inputs(tmp_path / "in")
    assert colorize(ckpt, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}") == 0
    out = capsys.readouterr()
    assert f"{len(expected)} colourised" in out.out and "skipped" not in out.err

    for name, size in expected.items():
        path = tmp_path / "out" / name  # output_ext=same: the input's own name and format
        assert path.is_file(), name
        with Image.open(path) as image:
            assert image.size == size, name
            assert image.format == Image.open(tmp_path / "in" / name).format
            assert image.mode in ("RGB", "RGBA"), name
            assert image.getexif().get(0x0112) is None, name  # upright pixels, no orientation tag

    def alpha(path):
        return np.asarray(Image.open(path).convert("RGBA"))[..., 3]

    for name in ("rgba.png", "la.png", "palette.png"):
        assert Image.open(tmp_path / "out" / name).mode == "RGBA", name
        np.testing.assert_array_equal(alpha(tmp_path / "out" / name), alpha(tmp_path / "in" / name))
    with Image.open(tmp_path / "out" / "phone.jpg") as phone:
        assert phone.getexif().get(0x010F) == "gancolor-test"  # the rest of the EXIF travels


def test_upright_output_matches_the_displayed_input(tmp_path, ckpt):
    # Left third bright, rest dark, stored sideways: after colourisation, the bright
    # band must be where a viewer of the input sees it (top, for orientation 6).
    stored = np.full((30, 90), 40, np.uint8)
    stored[:, :30] = 230
    Image.fromarray(stored).save(tmp_path / "side.jpg", quality=95, exif=_exif(6))
    assert colorize(ckpt, f"input={tmp_path / 'side.jpg'}", f"output={tmp_path / 'out'}", "output_ext=png") == 0
    upright = np.asarray(Image.open(tmp_path / "out" / "side.png").convert("L")).astype(int)
    assert upright.shape == (90, 30)
    assert upright[:25].mean() > 150 and upright[35:].mean() < 100


def test_bad_files_are_reported_skipped_and_the_rest_done(tmp_path, ckpt, capsys):
    good = tmp_path / "in" / "good.png"
    good.parent.mkdir()
    Image.fromarray(texture(20, 30)).save(good)
    Image.fromarray(texture(24, 24)).save(tmp_path / "in" / "also good.jpg")
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    data = (tmp_path / "in" / "also good.jpg").read_bytes()
    (tmp_path / "in" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "in" / "notes.png").write_text("not an image at all")
    Image.fromarray(texture(100, 120)).save(tmp_path / "in" / "huge.png")
    # Over twice Pillow's own limit (179 MP), which Image.open refuses before the size
    # can be checked: still over max_pixels, from its header, not "unreadable".
    header_only_png(tmp_path / "in" / "bomb.png", 15000, 15000)

    code = colorize(ckpt, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "max_pixels=10000")
    assert code == 2
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.strip()]
    assert len(errors) == 5
    for name, reason in [("empty.jpg", "empty"), ("truncated.jpg", "truncated"), ("notes.png", "not an image"),
                         ("huge.png", "120x100 = 0.0 MP is over the limit of 0.01 MP (max_pixels)"),
                         ("bomb.png", "15000x15000 = 225.0 MP is over the limit of 0.01 MP (max_pixels)")]:
        line = next(line for line in errors if name in line)
        assert line.startswith("gancolor: skipped ") and reason in line, line
    assert "2 colourised" in out.out and "5 files skipped: 2 too large, 3 unreadable" in out.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["also good.jpg", "good.png"]


def test_nothing_done_exits_1(tmp_path, ckpt, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"")
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert colorize(ckpt, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}") == 1
    assert "0 colourised, 2 files skipped: 2 unreadable" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, ckpt, capsys):
    Image.fromarray(texture(20, 20)).save(tmp_path / "a.png")
    args = [f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'out'}"]
    assert colorize(ckpt, *args) == 0
    result = tmp_path / "out" / "a.png"
    result.write_bytes(b"marker")  # stands in for an earlier result
    capsys.readouterr()
    assert colorize(ckpt, *args) == 0
    assert result.read_bytes() == b"marker"
    assert "1 already there" in capsys.readouterr().out
    assert colorize(ckpt, *args, "overwrite=true") == 0
    assert Image.open(result).size == (20, 20)


def test_output_extension_compare_and_single_file_output(tmp_path, ckpt, capsys):
    rgba = np.dstack([colour(20, 30), np.full((20, 30), 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'out'}", "output_ext=jpg", "compare=true") == 0
    assert "alpha dropped" in capsys.readouterr().err  # JPEG has no alpha: said, not silent
    with Image.open(tmp_path / "out" / "a.jpg") as image:
        assert image.format == "JPEG" and image.size == (30, 20)
    with Image.open(tmp_path / "out" / "a_compare.jpg") as image:
        assert image.size == (60, 20)  # input | output

    assert colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'named.webp'}") == 0
    with Image.open(tmp_path / "named.webp") as image:
        assert image.format == "WEBP" and image.mode == "RGBA"


def test_glob_input_names_results_relative_to_its_fixed_part(tmp_path, ckpt, monkeypatch):
    for sub in ("x", "y"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        Image.fromarray(texture(16, 16)).save(tmp_path / "in" / sub / "p.png")
        Image.fromarray(texture(16, 16)).save(tmp_path / "in" / sub / "q.jpg")
    monkeypatch.chdir(tmp_path)
    assert colorize(ckpt, "input=in/*/*.png", "output=out") == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")) == ["x/p.png", "y/p.png"]
    assert not (tmp_path / "outputs").exists()  # composing the config writes nothing


def test_batching_changes_nothing(tmp_path, ckpt):
    for i in range(3):
        Image.fromarray(texture(40, 56, seed=i)).save(tmp_path / f"{i}.png")
    Image.fromarray(texture(56, 40)).save(tmp_path / "portrait.png")  # its own shape: its own batch
    assert colorize(ckpt, f"input={tmp_path}", f"output={tmp_path / 'one'}", "batch_size=1") == 0
    assert colorize(ckpt, f"input={tmp_path}", f"output={tmp_path / 'four'}", "batch_size=4") == 0
    for name in ("0.png", "1.png", "2.png", "portrait.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "one" / name)), np.asarray(Image.open(tmp_path / "four" / name)))


def test_the_thread_count_changes_nothing(ckpt, photos):
    """With several torch threads a CPU Colorizer finishes a photo in strips on a thread
    pool; with one, in one piece: the same pixels either way (the suite's workers run on
    one thread each, so this is where the pool is exercised)."""
    from gancolor.checkpoint import load_recipe

    photo = photos[0][:300, :450]  # 135,000 pixels: two strips of 2^17
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            recipe, _ = load_recipe(ckpt)
            colorizer = Colorizer(recipe, RENDER)
            assert (colorizer._pool is not None) == (count > 1)
            results.append(colorizer(photo))
            colorizer.close()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(results[0], results[1])


def write_mixed_folder(folder: Path, photos) -> None:
    """Real photos of four sizes and formats, two of one shape (they share a batch), a
    16-bit scan, a file that is no image and one whose output cannot be written."""
    folder.mkdir()
    astronaut, chelsea, coffee, rocket = photos
    Image.fromarray(astronaut[::2, ::2]).save(folder / "astronaut.jpg", quality=90)
    Image.fromarray(chelsea).convert("L").save(folder / "chelsea.png")
    Image.fromarray(np.dstack([coffee[::2, ::2], np.full(coffee[::2, ::2].shape[:2], 180, np.uint8)])).save(folder / "coffee.png")
    Image.fromarray(rocket[::3, ::3]).save(folder / "rocket.webp", quality=90)
    for i in range(2):
        Image.fromarray(texture(60, 80, seed=i)).save(folder / f"same_shape_{i}.png")
    Image.fromarray(texture(50, 70).astype(np.uint16) * 257).save(folder / "scan16.tif")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "blocked").mkdir()
    Image.fromarray(texture(20, 30)).save(folder / "blocked" / "x.png")
    Image.fromarray(texture(20, 30)).save(folder / "kept.png")


def occupy_output(out: Path) -> None:
    """An existing result (kept) and a file where a result's folder belongs (not written)."""
    out.mkdir()
    (out / "kept.png").write_bytes(b"an earlier result")
    (out / "blocked").write_text("a file where the folder blocked/ must go")


def test_workers_change_nothing_but_where_the_writing_runs(tmp_path, ckpt, photos, monkeypatch):
    import threading

    import gancolor.colorize as colorize_module
    from gancolor.colorize import Options, run

    source, out = tmp_path / "in", tmp_path / "out"
    write_mixed_folder(source, photos)
    real_write = colorize_module.write_image
    threads: set[str] = set()

    def noting_thread(pixels, path, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return real_write(pixels, path, *args, **kwargs)

    def colourised(workers: int) -> tuple:
        said: list[str] = []
        options = Options(ckpt=ckpt, input=str(source), output=out, batch_size=2, workers=workers, progress_bar=False)
        return run(options, log=said.append), said

    occupy_output(out)
    monkeypatch.setattr(colorize_module, "write_image", noting_thread)
    one, said_one = colourised(1)
    assert threads == {"MainThread"}
    out.rename(tmp_path / "out_1")

    # The first write to start waits until two later ones are done: outcomes come back
    # out of order, and must still be recorded in the order of workers=1.
    first: list[Path] = []
    finished: list[Path] = []
    others_done = threading.Event()
    lock = threading.Lock()

    def first_one_late(pixels, path, *args, **kwargs):
        with lock:
            late = not first
            first.append(path) if late else None
        if late:
            assert others_done.wait(60)
        try:
            return noting_thread(pixels, path, *args, **kwargs)
        finally:
            with lock:
                finished.append(path)
                if len(finished) >= 2:
                    others_done.set()

    threads.clear()
    occupy_output(out)
    monkeypatch.setattr(colorize_module, "write_image", first_one_late)
    three, said_three = colourised(3)
    assert threads and all(name.startswith("gancolor-write") for name in threads)
    assert finished.index(first[0]) >= 2

    assert three == one  # written (in the same order), kept, failed, counts
    assert three.exit_code() == one.exit_code() == 2
    assert said_three == said_one
    assert len(one.written) == 7 and [kind for _, _, kind in one.failed] == ["not written", "unreadable"]
    blocked = f"cannot write {out / 'blocked' / 'x.png'}: [Errno 17] File exists: '{out / 'blocked'}'"
    assert [line for line in said_one if line.startswith("gancolor: skipped")] == [
        f"gancolor: skipped {source / 'blocked' / 'x.png'}: {blocked}",
        f"gancolor: skipped {source / 'empty.jpg'}: empty file (0 bytes)",
    ]
    results = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert results == sorted(p.relative_to(tmp_path / "out_1") for p in (tmp_path / "out_1").rglob("*") if p.is_file())
    for rel in results:
        assert (out / rel).read_bytes() == (tmp_path / "out_1" / rel).read_bytes(), rel


@pytest.mark.parametrize("value, message", [("0", "workers must be >= 1, got 0"), ("x", "workers must be an integer or auto, got 'x'"),
                                            ("null", "workers must be an integer or auto, got None")])
def test_a_bad_workers_value_is_one_error_line_before_any_work(tmp_path, ckpt, capsys, value, message):
    Image.fromarray(texture(16, 16)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as info:
        colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'out'}", f"workers={value}")
    assert info.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.strip()] == [f"gancolor: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_interrupted_write_leaves_no_partial_file(tmp_path, ckpt, monkeypatch):
    Image.fromarray(texture(20, 20)).save(tmp_path / "a.png")
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        if hasattr(fp, "write"):
            fp.write(b"half an image")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(SystemExit) as info:
        colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'out'}")
    assert info.value.code == 130
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["input=x", "output=y"], "missing argument: ckpt=..."),
        (["ckpt=c.pt", "input=x", "output=y", "colour=1"], "unknown argument 'colour'"),
        (["ckpt=c.pt", "input=x", "output=y", "output_ext=gif"], "output_ext must be one of"),
        (["ckpt=c.pt", "input=x", "output=y", "quality=101"], "quality must be 1..100"),
        (["ckpt=c.pt", "input=x", "output=y", "render_size=0"], "render_size must be >= 1"),
        (["ckpt=c.pt", "input=x", "output=y", "precision=fp8"], "precision must be 32 or bf16"),
        (["ckpt=c.pt", "input=x", "output=y", "tta=rotate"], "tta must be one of none, flip, got 'rotate'"),
        (["input"], "expected key=value"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gancolor: error: ") and message in lines[0]


def test_missing_input_and_checkpoint_are_one_line_errors(tmp_path, ckpt, capsys):
    with pytest.raises(SystemExit) as info:
        colorize(ckpt, f"input={tmp_path / 'nowhere'}", f"output={tmp_path / 'out'}")
    assert info.value.code == 2 and "input not found" in capsys.readouterr().err
    Image.fromarray(texture(8, 8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as info:
        main([f"ckpt={tmp_path / 'none.pt'}", f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'out'}"])
    assert info.value.code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_paths_need_no_hydra_quoting():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in ["été/写真 (1).jpg", "a,b=c[1].png", "it's.jpg", "C:\\photos\\", "end\\'", "~/x #2.tif"]:
        assert parser.parse_overrides([f"input={hydra_quoted(value)}"])[0].value() == value


def test_command_line_exit_code_and_no_stray_folders(tmp_path, ckpt):
    Image.fromarray(texture(20, 20)).save(tmp_path / "a b.png")
    (tmp_path / "bad.png").write_bytes(b"")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-m", "gancolor.colorize", f"ckpt={ckpt}", "input=.", "output=out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "gancolor: skipped bad.png: empty file (0 bytes)" in result.stderr
    assert (tmp_path / "out" / "a b.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b.png", "bad.png", "out"]


def test_a_run_folder_as_ckpt_means_its_best_else_its_last(tmp_path, capsys):
    run = tmp_path / "run"
    last = tiny_checkpoint(run / "checkpoints" / "last.pt", seed=0)
    Image.fromarray(texture(16, 16)).save(tmp_path / "a.png")
    args = [f"input={tmp_path / 'a.png'}", "output_ext=png"]
    assert colorize(run, *args, f"output={tmp_path / 'from_last'}") == 0
    assert f"using {last} (the run has no best.pt)" in capsys.readouterr().err
    best = tiny_checkpoint(run / "checkpoints" / "best.pt", seed=1)
    assert colorize(run / "checkpoints", *args, f"output={tmp_path / 'from_best'}") == 0
    assert f"using {best} (the run's best)" in capsys.readouterr().err
    # Different weights, different colours: the file said is the file used.
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "from_last" / "a.png")), np.asarray(Image.open(tmp_path / "from_best" / "a.png")))
    (tmp_path / "empty run").mkdir()
    with pytest.raises(SystemExit) as info:
        colorize(tmp_path / "empty run", *args, f"output={tmp_path / 'x'}")
    assert info.value.code == 2 and "no best.pt or last.pt in" in capsys.readouterr().err

    # evaluate takes a run folder the same way, and writes into that run's eval/.
    from gancolor.evaluate import main as evaluate

    Image.fromarray(colour(24, 24)).save(tmp_path / "truth.png")
    (tmp_path / "val").mkdir()
    (tmp_path / "truth.png").rename(tmp_path / "val" / "truth.png")
    assert evaluate([f"ckpt={run}", f"data.root={tmp_path / 'val'}", "progress_bar=false", "num_samples=0",
                     "lpips.weights=null", "fid.weights=null"]) == 0
    assert f"using {best} (the run's best)" in capsys.readouterr().err
    assert (run / "eval" / "metrics.json").is_file()


@pytest.mark.parametrize("inputs", ["folder", "glob", "one file"])
def test_output_an_existing_file_is_one_error_before_any_work(tmp_path, ckpt, capsys, inputs, monkeypatch):
    for i in range(3):
        Image.fromarray(texture(16, 16, seed=i)).save(tmp_path / f"{i}.png")
    (tmp_path / "results").write_text("a file where a folder is expected")
    monkeypatch.chdir(tmp_path)
    source = {"folder": ".", "glob": "*.png", "one file": "0.png"}[inputs]
    with pytest.raises(SystemExit) as info:
        colorize(ckpt, f"input={source}", "output=results")
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gancolor: error: output is an existing file, not a folder: results")
    assert (tmp_path / "results").read_text() == "a file where a folder is expected"


# -- long folders ---------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_a_long_folder(tmp_path, ckpt):
    import threading
    import time

    for i in range(200):
        Image.fromarray(texture(30, 40, seed=i)).save(tmp_path / f"{i:03d}.png")
    out = tmp_path / "out"
    samples: list[tuple[int, int]] = []  # (outputs written, RSS)
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            done = len(os.listdir(out)) if out.is_dir() else 0
            samples.append((done, rss_bytes()))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert colorize(ckpt, f"input={tmp_path}", f"output={out}", "batch_size=4") == 0
    finally:
        running.clear()
        sampler.join()
    samples.append((200, rss_bytes()))
    at_50 = next(rss for done, rss in samples if done >= 50)
    after = max(rss for done, rss in samples if done >= 50)
    assert after <= 1.10 * at_50, f"RSS grew from {at_50 / 2**20:.0f} MiB after 50 images to {after / 2**20:.0f} MiB"


def start_colorize(ckpt, source: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gancolor.colorize", f"ckpt={ckpt}", f"input={source}", f"output={out}", "progress_bar=false", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop_after(process: subprocess.Popen, out: Path, outputs: int, sig: int) -> tuple[str, str]:
    import time

    deadline = time.time() + 120
    while not out.is_dir() or len([p for p in out.iterdir() if not p.name.startswith(".")]) < outputs:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(sig)
    return process.communicate(timeout=120)


def complete_outputs(out: Path) -> list[str]:
    """The outputs in `out`, each checked to decode in full; no temporary file may be left."""
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    for name in names:
        with Image.open(out / name) as image:
            image.load()
    return names


@pytest.mark.parametrize("workers", [1, 3])
def test_sigterm_and_ctrl_c_leave_complete_outputs_and_the_next_run_continues(tmp_path, ckpt, capsys, workers):
    import signal

    source = tmp_path / "in"
    source.mkdir()
    for i in range(60):
        Image.fromarray(colour(96, 128, seed=i)).save(source / f"{i:03d}.jpg", quality=90)
    out = tmp_path / "out"
    seen = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        process = start_colorize(ckpt, source, out, f"workers={workers}")
        stdout, stderr = stop_after(process, out, seen + 5, sig)
        assert process.returncode == 128 + sig, stderr
        assert "Traceback" not in stderr
        names = complete_outputs(out)
        done = len(names) - seen
        assert f"{done} colourised" in stdout
        assert f"gancolor: stopped by {signal.Signals(sig).name} after {done} of {60 - seen} inputs" in stderr
        assert 0 < done < 60 - seen
        seen = len(names)
    assert colorize(ckpt, f"input={source}", f"output={out}", f"workers={workers}") == 0
    assert f"{60 - seen} colourised, {seen} already there" in capsys.readouterr().out
    assert len(complete_outputs(out)) == 60


# -- out of memory --------------------------------------------------------------------


class OutOfMemoryAbove(torch.nn.Module):
    """A generator that raises a real torch.OutOfMemoryError, as a GPU short of memory
    does, whenever it is given more than `limit` images at once."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.calls = net, limit, []

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(L))
        if len(L) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.net(L)


def short_of_memory(ckpt, limit: int) -> Colorizer:
    from gancolor.checkpoint import load_recipe

    recipe, _ = load_recipe(ckpt)
    recipe.generator = OutOfMemoryAbove(recipe.generator, limit)
    return Colorizer(recipe, RENDER)


def colourised_short_of_memory(folder: Path, ckpt, images: int, batch_size: int, limit: int):
    """colorize's `process` over `images` gray photos with a generator short of memory:
    (jobs, tally, generator calls, what it said)."""
    from gancolor.colorize import Options, plan, process

    for i in range(images):
        Image.fromarray(texture(24, 24, seed=i)).save(folder / f"{i}.png")
    options = Options(ckpt=ckpt, input=str(folder), output=folder / "out", batch_size=batch_size, progress_bar=False)
    jobs, _ = plan(options)
    said: list[str] = []
    tight = short_of_memory(ckpt, limit)
    return jobs, process(jobs, tight, options, log=said.append), tight.recipe.generator.calls, said


def test_a_batch_out_of_memory_is_retried_smaller_with_a_warning(tmp_path, ckpt, colorizer):
    jobs, tally, calls, said = colourised_short_of_memory(tmp_path, ckpt, images=4, batch_size=4, limit=1)
    assert calls == [4, 2, 1, 1, 2, 1, 1]
    assert len(tally.written) == 4 and not tally.failed
    assert sum("out of memory" in m and "retrying 2 at a time" in m for m in said) == 1
    for job in jobs:  # the same colours as with memory to spare
        expected = colorizer(np.asarray(Image.open(job.src)))
        np.testing.assert_array_equal(np.asarray(Image.open(job.dst)), expected)


def test_an_image_that_fits_nowhere_is_skipped_never_written_uncoloured(tmp_path, ckpt):
    jobs, tally, calls, said = colourised_short_of_memory(tmp_path, ckpt, images=3, batch_size=2, limit=0)
    assert calls == [2, 1, 1, 1]  # each image of the batch tried alone
    assert tally.written == [] and len(tally.failed) == 3 and tally.exit_code() == 1
    assert [m for m in said if m.startswith("gancolor: skipped")] == [f"gancolor: skipped {j.src}: out of memory (lower max_pixels, or use a machine with more memory)" for j in jobs]
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_evaluate_never_scores_an_image_it_could_not_colourise(tmp_path, ckpt, capsys, monkeypatch):
    import gancolor.checkpoint
    from gancolor.evaluate import main as evaluate

    (tmp_path / "val").mkdir()
    Image.fromarray(colour(24, 24)).save(tmp_path / "val" / "a.png")
    real_load = gancolor.checkpoint.load_recipe

    def load_short_of_memory(path, device="cpu", **options):
        recipe, loaded = real_load(path, device, **options)
        recipe.generator = OutOfMemoryAbove(recipe.generator, limit=0)
        return recipe, loaded

    monkeypatch.setattr(gancolor.checkpoint, "load_recipe", load_short_of_memory)
    with pytest.raises(SystemExit) as info:
        evaluate([f"ckpt={ckpt}", f"data.root={tmp_path / 'val'}", f"output={tmp_path / 'eval'}", "progress_bar=false",
                  "lpips.weights=null", "fid.weights=null"])
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gancolor: error")]
    assert err == ["gancolor: error: out of memory colourising a.png, even on the CPU: lower data.image_size"]
    assert not (tmp_path / "eval").exists()


def test_flip_tta_colours_a_mirrored_photo_as_the_mirror_of_its_colours(colorizer):
    """tta=flip averages the net's prediction with its prediction of the mirrored photo,
    mirrored back: so the mirrored photo gets the mirrored colours, which the net alone
    (random weights here, like any net's left-right biases) does not give. (A width
    whose frame is padded alike on both sides; otherwise the two views differ by a pixel's
    shift and the symmetry is approximate.)"""
    flip = Colorizer(colorizer.recipe, RENDER, tta="flip")
    gray = texture(40, 48, seed=3)

    def ab(c: Colorizer, pixels: np.ndarray) -> torch.Tensor:
        return c.predict([c.prepare(np.ascontiguousarray(pixels)).small])[0]

    def asymmetry(c: Colorizer) -> float:
        return float((ab(c, gray) - ab(c, gray[:, ::-1]).flip(-1)).abs().mean() / ab(c, gray).abs().mean())

    assert asymmetry(colorizer) > 0.05
    assert asymmetry(flip) < 1e-6
    average = (ab(colorizer, gray) + ab(colorizer, gray[:, ::-1]).flip(-1)) / 2
    torch.testing.assert_close(ab(flip, gray), average, atol=1e-6, rtol=0)


def test_flip_tta_from_the_command_line(tmp_path, ckpt):
    Image.fromarray(texture(40, 48, seed=3)).save(tmp_path / "a.png")
    assert colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'plain.png'}") == 0
    assert colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'flip.png'}", "tta=flip") == 0
    plain, flipped = (np.asarray(Image.open(tmp_path / name)) for name in ("plain.png", "flip.png"))
    assert plain.shape == flipped.shape == (40, 48, 3)
    assert np.abs(plain.astype(int) - flipped.astype(int)).max() >= 1  # the tiny random net's colours are faint


def test_the_cpu_twin_colours_as_the_original(ckpt, colorizer):
    # Where a GPU runs out of memory, this copy on the CPU takes the image.
    twin = colorizer.cpu_twin()
    assert twin is colorizer.cpu_twin() and twin.device.type == "cpu"  # made once
    assert twin.recipe is not colorizer.recipe
    assert all(p.device.type == "cpu" for p in twin.recipe.parameters())
    gray = texture(30, 40)
    np.testing.assert_array_equal(twin(gray), colorizer(gray))


def test_output_in_place_of_the_input_folder_is_refused_in_one_line(tmp_path, ckpt, capsys, monkeypatch):
    """output= the input folder (or a folder holding it) would pass every input over as an
    earlier result: said as such, not as 'no image files'."""
    (tmp_path / "t2" / "sub").mkdir(parents=True)
    Image.fromarray(texture(16, 16)).save(tmp_path / "t2" / "sub" / "a.png")
    monkeypatch.chdir(tmp_path)
    for args, message in (
        (["input=t2/", "output=t2/"], "output=t2 is the input folder: choose another folder for the results"),
        (["input=t2/sub", "output=t2"], "output=t2 is a folder that holds the input folder t2/sub: choose another folder"),
        (["input=t2/**/*.png", "output=t2"], "output=t2 holds every file t2/**/*.png matches: choose another folder"),
    ):
        with pytest.raises(SystemExit) as info:
            colorize(ckpt, *args)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert info.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert sorted(p.name for p in (tmp_path / "t2").rglob("*")) == ["a.png", "sub"]
    assert colorize(ckpt, "input=t2/sub", "output=t2/out") == 0  # a new folder beside the photos is fine


def test_output_ext_that_disagrees_with_a_named_output_file_is_refused(tmp_path, ckpt, capsys):
    """With output=x.jpg the name decides the format: output_ext=png beside it was silently
    ignored, so it is refused; output_ext naming the same format is fine. The alpha note
    of a named output says what keeps alpha there (its name), not output_ext."""
    Image.fromarray(np.dstack([colour(20, 30), np.full((20, 30), 200, np.uint8)])).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as info:
        colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'x.jpg'}", "output_ext=png")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 1
    assert "output_ext=png but output names a .jpg file: name it x.png, or leave output_ext out" in lines[0]
    assert not (tmp_path / "x.jpg").exists()
    assert colorize(ckpt, f"input={tmp_path / 'a.png'}", f"output={tmp_path / 'x.jpeg'}", "output_ext=jpg") == 0
    err = capsys.readouterr().err
    assert "alpha dropped (JPEG has none; an output named .png keeps it)" in err and "output_ext=" not in err
    with Image.open(tmp_path / "x.jpeg") as image:
        assert image.format == "JPEG"


def test_pillows_decompression_bomb_warning_stays_quiet_under_max_pixels(tmp_path, ckpt, monkeypatch):
    """Photos over Pillow's own limit (89.5 MP; lowered here to keep the photo small) but
    under max_pixels: gancolor's limit decides, and Pillow's warning, raised when the
    folder's files are first opened, never reaches the terminal."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "in").mkdir()
    Image.fromarray(texture(40, 48)).save(tmp_path / "in" / "big.png")  # 1920 px: Pillow warns, short of refusing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert colorize(ckpt, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}") == 0
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], [str(w.message) for w in caught]
    assert (tmp_path / "out" / "big.png").is_file()


def test_a_bomb_header_is_counted_too_large_where_no_max_pixels_is_given(tmp_path, monkeypatch):
    """Scans (training, evaluate) have no max_pixels: Pillow's own refusal (twice its
    MAX_IMAGE_PIXELS) is the limit, and a file over it is counted "too large" with its
    size from the header, as colorize counts it, not "unreadable" with Pillow's words."""
    from gancolor.data.scan import scan_color_images

    # Pillow's own value: an earlier command's allow_large_images (process-wide) moves it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    header_only_png(tmp_path / "bomb.png", 15000, 15000)
    scan = scan_color_images([tmp_path / "bomb.png"], num_workers=1)
    assert scan.skipped == [(tmp_path / "bomb.png", "too large")]
    assert scan.unreadable[0][1] == "15000x15000 = 225.0 MP is over the limit of 179 MP that is decoded safely"
    assert scan.summary() == "0 colour images; 1 file skipped: 1 too large"
