"""Files from strangers: a checkpoint whose stored config names code to run is refused
by every command that reads it (resume, init_from, colorize, evaluate), with one line,
exit 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gancolor.build import check_config_targets
from gancolor.checkpoint import load_checkpoint
from gancolor.errors import CheckpointError
from helpers import CONF_DIR, compose, one_error_line, read_metrics, run_gancolor, shrink

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
    said = (result.stdout + result.stderr).splitlines()  # the fallback warnings are log lines (stdout)
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

