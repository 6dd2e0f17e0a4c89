"""Files from strangers (issue 12).

A checkpoint whose stored config names code to run is refused by every command that
reads it (resume, init_from, colorize, evaluate), with one line, exit 2 and nothing
written. A folder holds every format Pillow reads: each is used, and every other file
is counted in the summary line of colorize, evaluate and the training data alike."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CONF_DIR,
    compose,
    one_error_line,
    read_metrics,
    shrink,
    tiny_checkpoint,
)
from omegaconf import OmegaConf
from PIL import Image, features
from warm import run_gancolor

from gancolor.build import check_config_targets
from gancolor.checkpoint import load_checkpoint
from gancolor.data import FolderDataModule, find_images, scan_color_images
from gancolor.errors import CheckpointError

TINY_RUN = [
    "data.image_size=32",
    "data.batch_size=2",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "trainer.progress_bar=false",
    "trainer.num_samples=1",
    "logger=none",
]

PRECIOUS = "the user's own file\n"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and mtime: what "nothing
    written" compares."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def file_writer(decoy: Path, victim: Path, **extra) -> dict:
    """A config node that, if built, overwrites `victim` with `decoy`'s bytes."""
    return {"_target_": "shutil.copyfile", "src": str(decoy), "dst": str(victim), **extra}


def craft(config: dict, case: str, decoy: Path, victim: Path) -> None:
    """Put a file-writing target where `case` says, as a stranger would."""
    if case == "trainer":
        config["trainer"] = file_writer(decoy, victim)
    elif case == "data":
        config["data"] = file_writer(decoy, victim)
    elif case == "logger":
        config["logger"] = file_writer(decoy, victim)
    elif case == "nested in the generator":
        config["generator"]["norm"] = {"inner": file_writer(decoy, victim)}
    elif case == "in a list":
        config["trainer"]["callbacks"] = [{"name": "ok"}, file_writer(decoy, victim)]
    elif case == "partial with args":
        config["model"]["make"] = {"_target_": "shutil.copyfile", "_partial_": True, "_args_": [str(decoy), str(victim)]}
    else:
        raise ValueError(case)


CASES = ["trainer", "data", "logger", "nested in the generator", "in a list", "partial with args"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache) -> Path:
    """A real run folder (two steps of a tiny pix2pix): its last.pt resumes."""
    work = tmp_path_factory.mktemp("trained")
    result = run_gancolor([*TINY_RUN, "trainer.max_steps=2", f"hydra.run.dir={work / 'run'}"], cwd=work, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, trained) -> dict:
    """One crafted copy of the run's last.pt per case, a victim file and photos to use."""
    root = tmp_path_factory.mktemp("stranger")
    decoy = root / "decoy.txt"
    decoy.write_text("overwritten by a checkpoint\n")
    victim = root / "victim.txt"
    victim.write_text(PRECIOUS)
    genuine = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    paths = {}
    for i, case in enumerate(CASES):
        ckpt = {**genuine, "config": OmegaConf.to_container(OmegaConf.create(genuine["config"]))}
        craft(ckpt["config"], case, decoy, victim)
        paths[case] = root / "crafted" / f"case{i}.pt"
        paths[case].parent.mkdir(exist_ok=True)
        torch.save(ckpt, paths[case])
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(((torch.arange(24 * 24 * 3) * (7 + i)) % 251).to(torch.uint8).view(24, 24, 3).numpy()).save(photos / f"p{i}.png")
    return {"root": root, "victim": victim, "ckpts": paths, "photos": photos}


def assert_refused(error_line: str, ckpt: Path) -> None:
    assert str(ckpt) in error_line and "shutil.copyfile" in error_line and "refusing to build" in error_line, error_line


@pytest.mark.slow
def test_resume_refuses_a_crafted_config_and_writes_nothing(crafted, cache, tmp_path):
    ckpt = crafted["ckpts"]["trainer"]
    before = listing(crafted["root"])
    result = run_gancolor([f"resume={ckpt}"], cwd=tmp_path, cache=cache, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert_refused(one_error_line(result), ckpt)
    assert crafted["victim"].read_text() == PRECIOUS
    assert listing(crafted["root"]) == before
    assert list(tmp_path.iterdir()) == []  # no run folder either


@pytest.mark.slow
def test_resume_of_a_run_folder_refuses_every_crafted_checkpoint_in_it(crafted, cache, tmp_path):
    # resume=FOLDER tries last.pt, then the step files, newest first: one run reads every case.
    run = tmp_path / "run_from_a_stranger"
    (run / "checkpoints").mkdir(parents=True)
    names = ["last.pt", *(f"step_{len(CASES) - i:08d}.pt" for i in range(1, len(CASES)))]
    for name, case in zip(names, CASES):
        (run / "checkpoints" / name).write_bytes(crafted["ckpts"][case].read_bytes())
    before = {**listing(crafted["root"]), **listing(tmp_path)}
    result = run_gancolor([f"resume={run}", f"hydra.run.dir={tmp_path / 'elsewhere'}"], cwd=tmp_path, cache=cache, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith("gancolor: error: ") and "Traceback" not in result.stderr
    said = (result.stdout + result.stderr).splitlines()  # refused before any log exists: warnings on stderr
    for name in names:
        assert any(str(run / "checkpoints" / name) in line and "refusing to build 'shutil.copyfile'" in line for line in said), name
    assert crafted["victim"].read_text() == PRECIOUS
    assert {**listing(crafted["root"]), **listing(tmp_path)} == before


@pytest.mark.parametrize("case", CASES)
def test_colorize_and_evaluate_refuse_a_crafted_config_and_write_nothing(crafted, case, tmp_path, capsys):
    from gancolor.colorize import main as colorize
    from gancolor.evaluate import main as evaluate

    ckpt = crafted["ckpts"][case]
    before = listing(crafted["root"])
    commands = [
        (colorize, [f"ckpt={ckpt}", f"input={crafted['photos']}", f"output={tmp_path / 'out'}", "progress_bar=false"]),
        (evaluate, [f"ckpt={ckpt}", f"data.root={crafted['photos']}", f"output={tmp_path / 'eval'}", "progress_bar=false",
                    "lpips.weights=null", "fid.weights=null"]),
    ]
    for command, args in commands:
        with pytest.raises(SystemExit) as info:
            command(args)
        assert info.value.code == 2
        assert_refused(one_error_line(capsys.readouterr().err), ckpt)
    assert crafted["victim"].read_text() == PRECIOUS
    assert listing(crafted["root"]) == before
    assert list(tmp_path.iterdir()) == []


def test_init_from_refuses_a_crafted_config(crafted):
    from gancolor.resume import init_weights_from

    with pytest.raises(CheckpointError, match="refusing to build 'shutil.copyfile'"):
        init_weights_from(None, crafted["ckpts"]["trainer"])
    assert crafted["victim"].read_text() == PRECIOUS


@pytest.mark.slow
def test_a_genuine_checkpoint_still_resumes(trained, cache):
    result = run_gancolor([f"resume={trained}", "trainer.max_steps=3"], cwd=trained.parent, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max(r["step"] for r in read_metrics(trained)) == 3
    assert load_checkpoint(trained / "checkpoints" / "last.pt")["global_step"] == 3


# -- the check itself, on configs ---------------------------------------------------------


@pytest.mark.parametrize(
    "target, why",
    [
        ("shutil.copyfile", "not a gancolor class"),
        ("gancolor", "not a gancolor class"),
        # Reached through a module gancolor imports: a prefix check would let them through.
        ("gancolor.train.shutil.copyfile", "no module gancolor.train.shutil"),
        ("gancolor.build.instantiate", "defines no class instantiate"),
        # gancolor's own functions write files too: only classes may be built.
        ("gancolor.checkpoint.atomic_save", "defines no class atomic_save"),
        ("gancolor.checkpoint.__builtins__", "not a plain dotted name"),
        ("gancolor.data._SkippingDataset", "not a plain dotted name"),
        ("gancolor.nowhere.Thing", "no module gancolor.nowhere"),
        (["gancolor.trainer.Trainer"], "not a dotted name"),
    ],
)
def test_only_classes_that_gancolor_defines_pass(target, why):
    with pytest.raises(CheckpointError, match="refusing to build") as info:
        check_config_targets({"trainer": {"_args_": [{"inner": {"_target_": target}}]}}, "stranger.pt")
    message = str(info.value)
    assert message.startswith("stranger.pt: ") and why in message and "trainer._args_[0].inner._target_" in message


def test_an_interpolation_cannot_smuggle_a_node_in():
    # oc.decode would turn this string into a node with a _target_ after the check.
    config = {"data": {"extra": '${oc.decode:"{_target_: shutil.copyfile, src: a, dst: b}"}'}}
    with pytest.raises(CheckpointError, match="interpolation"):
        check_config_targets(config, "stranger.pt")


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_shipped_config_passes(model):
    cfg = shrink(compose(f"model={model}", "logger=wandb"))
    check_config_targets(OmegaConf.to_container(cfg, resolve=True), "run")
    old_names = {"data": {"_target_": "gancolor.data.FolderData"}, "logger": {"_target_": None}}
    check_config_targets(old_names, "old run")  # aliases kept for old checkpoints pass as well



# -- folders hold every format Pillow reads ------------------------------------------------


def colour_pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.stack(np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height)), axis=2)
    rgb = np.dstack([base[..., 0], base[..., 1], 255 - base[..., 0]]) + rng.normal(0, 8, (height, width, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_formats_folder(folder: Path) -> dict:
    """Colour images in formats beyond gancolor's old extension list, one grayscale PGM,
    an animated GIF, a broken GIF, a file of no image format, and files to pass over quietly."""
    folder.mkdir(parents=True)
    colour = {"scan.gif": "GIF", "portrait.ppm": "PPM", "poster.tga": "TGA", "sub/leaf.sgi": "SGI"}
    if features.check("jpg_2000"):
        colour["map.jp2"] = "JPEG2000"
    for i, (name, fmt) in enumerate(colour.items()):
        (folder / name).parent.mkdir(exist_ok=True)
        Image.fromarray(colour_pattern(40, 48, seed=i)).save(folder / name, format=fmt)
    frames = [Image.fromarray(colour_pattern(40, 48, seed=10 + i)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.fromarray(colour_pattern(40, 48)[..., 0]).save(folder / "gray.pgm")
    data = (folder / "scan.gif").read_bytes()
    (folder / "broken.gif").write_bytes(data[: len(data) // 2])
    (folder / "a.xyz").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.txt").write_text("not an image")
    (folder / "meta.json").write_text("{}")
    (folder / ".hidden.png").write_bytes(b"hidden")
    return {
        "colour": sorted([*colour, "animated.gif"]),
        "gray": ["gray.pgm"],
        "summary": "3 files skipped: 1 grayscale, 1 unreadable, 1 unsupported format: a.xyz",
    }


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("formats") / "in"
    return folder, write_formats_folder(folder)


def test_jpeg_2000_is_really_tested():
    assert features.check("jpg_2000"), "this Pillow has no OpenJPEG: the JPEG 2000 case is not exercised"


def test_training_data_takes_every_format_pillow_reads_and_counts_the_rest(formats, caplog):
    folder, expect = formats
    found = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert "notes.txt" not in found and "meta.json" not in found and ".hidden.png" not in found
    scan = scan_color_images(find_images(folder))
    assert sorted(p.relative_to(folder).as_posix() for p in scan.good) == expect["colour"]
    assert [p.name for p in scan.grayscale] == ["gray.pgm"]
    assert [p.name for p, _ in scan.unreadable] == ["broken.gif"] and [p.name for p, _ in scan.unsupported] == ["a.xyz"]
    assert [p.name for p in scan.animated] == ["animated.gif"]
    assert scan.summary() == f"{len(expect['colour'])} colour images; {expect['summary']}"

    caplog.set_level(logging.INFO, logger="gancolor.data")
    data = FolderDataModule(folder, image_size=32, num_workers=0, val_fraction=0.25)
    data.setup()
    assert data.train_size + data.val_size == len(expect["colour"])
    said = [r.getMessage() for r in caplog.records]
    assert sum(expect["summary"] in m for m in said) == 1
    assert sum("animated" in m and "first frame" in m for m in said) == 1
    batch = next(iter(data.train_loader()))
    assert batch["rgb"].shape[1:] == (3, 32, 32)


def test_colorize_takes_every_format_pillow_reads_and_counts_the_rest(formats, tmp_path, capsys):
    from gancolor.colorize import main as colorize

    folder, expect = formats
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    code = colorize([f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path / 'out'}", "progress_bar=false"])
    out = capsys.readouterr()
    assert code == 2  # broken.gif was an image and could not be done
    done = expect["colour"] + expect["gray"]
    assert f"{len(done)} colourised, 2 files skipped: 1 unreadable, 1 unsupported format: a.xyz" in out.out
    err = [line for line in out.err.splitlines() if line.strip()]
    assert sum("animated.gif" in line and "first frame" in line for line in err) == 1
    assert [line for line in err if line.startswith("gancolor: skipped")] == [
        next(line for line in err if "broken.gif" in line)
    ]
    # Formats colorize cannot write come out as PNG, at the input's size.
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == sorted(str(Path(n).with_suffix(".png")) for n in done)
    for name in done:
        with Image.open(tmp_path / "out" / Path(name).with_suffix(".png")) as image:
            assert image.size == (48, 40) and image.mode == "RGB"


def test_a_folder_of_gif_scans_is_colourised_and_one_of_no_image_format_is_an_error(tmp_path, capsys):
    from gancolor.colorize import main as colorize

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    (tmp_path / "gifs").mkdir()
    for i in range(2):
        Image.fromarray(colour_pattern(24, 24, seed=i)[..., 1]).save(tmp_path / "gifs" / f"scan{i}.gif")
    assert colorize([f"ckpt={ckpt}", f"input={tmp_path / 'gifs'}", f"output={tmp_path / 'out'}", "progress_bar=false"]) == 0
    assert "2 colourised -> " in capsys.readouterr().out

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "a.xyz").write_bytes(b"\x00" * 100)
    (tmp_path / "odd" / "readme.md").write_text("# photos")
    with pytest.raises(SystemExit) as info:
        colorize([f"ckpt={ckpt}", f"input={tmp_path / 'odd'}", f"output={tmp_path / 'out2'}"])
    assert info.value.code == 2
    assert one_error_line(capsys.readouterr().err).endswith(
        f"no image files at {tmp_path / 'odd'} (1 file skipped: 1 unsupported format: a.xyz)"
    )


def test_evaluate_takes_every_format_pillow_reads_and_counts_the_rest(formats, tmp_path, capsys):
    import json

    from gancolor.evaluate import main as evaluate

    folder, expect = formats
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    assert evaluate([f"ckpt={ckpt}", f"data.root={folder}", f"output={tmp_path / 'eval'}", "progress_bar=false",
                     "num_samples=0", "lpips.weights=null", "fid.weights=null", "data.image_size=32"]) == 0
    err = capsys.readouterr().err
    assert f"gancolor: {expect['summary']}" in err.splitlines()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sorted(row["path"] for row in report["checkpoints"][0]["per_image"]) == expect["colour"]
    assert [Path(p).name for p, _ in report["skipped"]["unsupported"]] == ["a.xyz"]
