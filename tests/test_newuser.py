"""What a new user hits in the first hour (issue 17): mistakes that must give one clear
line before any work (and before torch is imported), run folders that are never
clobbered, options that would silently do nothing, and numbers that would mislead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gancolor.config_check import importable
from gancolor.errors import CheckpointError, UserError
from helpers import gancolor_env, one_error_line, run_gancolor, tiny_checkpoint

REPO = Path(__file__).resolve().parent.parent


# -- files that are not what they are given as ------------------------------------------


def test_a_text_file_given_as_a_checkpoint_is_named_as_not_one(tmp_path):
    from gancolor.checkpoint import load_checkpoint

    for text in ("some notes\n", "hello world\n", "epoch 3: 21.3 dB\n"):  # torch.load: 101, pop from empty list, ...
        notes = tmp_path / "notes.txt"
        notes.write_text(text)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(notes)
        assert str(info.value) == f"{notes} is not a checkpoint file (a .pt that gancolor's training wrote)"


# -- config mistakes: one line, before Hydra starts a job -------------------------------


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.root=/photos"], "data.root needs data=folder (or aligned, unpaired, domains, nir, attributes)"),
        (["+data.root=/photos"], "data.root needs data=folder (or aligned, unpaired, domains, nir, attributes)"),
        (["+trainer.max_epoch=3"], "unknown key trainer.max_epoch: did you mean trainer.max_epochs?"),
        (["trainer.max_epoch=3"], "unknown key trainer.max_epoch: did you mean trainer.max_epochs?"),
        (["trainer.batch_size=8"], "unknown key trainer.batch_size: did you mean data.batch_size?"),
        (["generator.n_blocks=3"], "generator.n_blocks needs generator=resnet"),
        (["data=folder"], "missing data.root=... (required by data=folder)"),
        (["data.batch_size=abc"], "data.batch_size must be an integer, got 'abc'"),
        (["generator.ngf=1.5"], "generator.ngf must be an integer, got 1.5"),
        (["loss.lambda_L1=abc"], "loss.lambda_L1 must be a number, got 'abc'"),
        (["trainer.progress_bar=yes"], "trainer.progress_bar must be true or false, got 'yes'"),
        (["model=stargan", "model.n_critic=five"], "model.n_critic must be an integer, got 'five'"),
        (["data.num_workers=many"], "data.num_workers must be an integer or auto, got 'many'"),
        (["model=cyclegan", "data.num_workers=1.5"], "data.num_workers must be an integer or auto, got 1.5"),
        # Keys whose yaml default is null are typed too (NULLABLE_NUMBERS).
        (["data=folder", "data.root=.", "data.max_images=abc"], "data.max_images must be an integer, got 'abc'"),
        (["generator.num_downs=abc"], "generator.num_downs must be an integer, got 'abc'"),
        (["trainer.max_steps=1.5"], "trainer.max_steps must be an integer, got 1.5"),
        # Optimiser and loss numbers in their ranges, before the job writes its run folder.
        (["model.lr=-1"], "model.lr must be > 0, got -1"),
        (["model.beta1=1.5"], "model.beta1 must be in [0, 1), got 1.5"),
        (["model.d_lr_mult=0"], "model.d_lr_mult must be > 0, got 0"),
        (["model.weight_decay=-1"], "model.weight_decay must be >= 0, got -1"),
        (["model=stargan", "model.d_lr=-0.1"], "model.d_lr must be > 0, got -0.1"),
        (["loss.lambda_L1=-5"], "loss.lambda_L1 must be >= 0, got -5"),
        (["model=cyclegan", "loss.lambda_identity=-0.5"], "loss.lambda_identity must be >= 0, got -0.5"),
    ],
)
def test_config_mistakes_are_named_in_one_line(overrides, expected):
    from gancolor.commandline import config_problem

    assert config_problem(overrides)[1] == expected


@pytest.mark.parametrize("data", ["sample", "folder", "unpaired", "domains", "nir"])
def test_num_workers_auto_is_accepted_by_every_data_config(data, tmp_path):
    from gancolor.commandline import config_problem

    root = [f"data.root={tmp_path}"] if data == "folder" else []
    target = ["model.target=lab"] if data == "nir" else []  # NIR inputs need a recipe that predicts L too
    assert config_problem([f"data={data}", *root, *target, "data.num_workers=auto"])[1] is None


def test_a_data_folder_that_is_not_there_is_named_before_torch_loads(tmp_path, monkeypatch):
    from gancolor.commandline import config_problem

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert config_problem(["data=folder", "data.root=photos"])[1] is None
    assert config_problem(["data=folder", "data.root=fotos"])[1] == f"data.root: folder not found: {tmp_path / 'fotos'}"
    assert config_problem(["data=nir", "model.target=lab", "data.nir_root=photos", "data.rgb_root=notes.txt"])[1] == (
        f"data.rgb_root: not a folder: {tmp_path / 'notes.txt'}"
    )
    assert config_problem(["data=unpaired"])[1] is None, "root: null is the sample photos"
    # Both NIR layouts at once: a missing data.root is not the mistake to name (the loader says "not both").
    assert config_problem(["data=nir", "model.target=lab", "data.root=fotos", "data.nir_root=photos", "data.rgb_root=photos"])[1] is None
    # A launcher that runs the jobs on other machines sees their folders, not this one's.
    from gancolor.config_check import missing_data_folder
    from helpers import compose

    cfg = compose("data=folder", "data.root=fotos")
    assert missing_data_folder(cfg, ["hydra/launcher=slurm"]) is None
    assert missing_data_folder(cfg, ["hydra/launcher=basic"]) is not None


def test_every_numeric_and_boolean_option_is_checked_against_its_yaml_type():
    from omegaconf import OmegaConf

    from gancolor.config_check import AUTO_KEYS, leaf_keys, type_problem
    from helpers import compose

    checked = 0
    for model in ("pix2pix", "cyclegan", "stargan", "cic"):
        cfg = compose(f"model={model}")
        for key in leaf_keys(cfg):
            default = OmegaConf.select(cfg, key, throw_on_missing=False)
            if isinstance(default, (bool, int, float)):
                checked += 1
                kind = "true or false" if isinstance(default, bool) else "an integer" if isinstance(default, int) else "a number"
                kind += " or auto" if key in AUTO_KEYS else ""
                assert type_problem(key, "abc", default) == f"{key} must be {kind}, got 'abc'"
                assert type_problem(key, default, default) is None
    assert checked > 60


@pytest.mark.skipif(importable("hydra_plugins.hydra_submitit_launcher"), reason="the slurm launcher is installed here")
def test_the_slurm_launcher_without_its_extra_says_how_to_install_it(capsys):
    from gancolor.commandline import check_sweep, config_problem

    expected = 'hydra/launcher=slurm needs its Hydra plugin: pip install -e ".[slurm]"'
    assert config_problem(["hydra/launcher=slurm"])[1] == expected
    with pytest.raises(SystemExit):
        check_sweep(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "loss.lambda_L1=10,100"])
    assert capsys.readouterr().err == f"gancolor: error: {expected}\n"


def test_config_errors_come_before_torch_is_imported(tmp_path, cache):
    """Each command in a fresh interpreter: the error, exit 2, and torch never loaded."""
    code = (
        "import sys, time\n"
        "sys.argv = ['gancolor', *sys.argv[1:]]\n"
        "started = time.perf_counter()\n"
        "from gancolor.cli import train_main\n"
        "try:\n"
        "    train_main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules, round(time.perf_counter() - started, 2))\n"
    )
    for args in (["data=folder"], ["data.batch_size=abc"], ["+trainer.max_epoch=3"], ["-m", "loss.lambda_L1=1,abc"]):
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=gancolor_env(cache),
                                capture_output=True, text=True, timeout=120)
        code_, torch_loaded, _seconds = result.stdout.split()
        assert (code_, torch_loaded) == ("2", "False"), result.stderr
        one_error_line(result)
    assert not (tmp_path / "runs").exists()


# -- run folders are never clobbered ------------------------------------------------------


def old_run(folder: Path) -> Path:
    """A run folder as training leaves it, with a note of the user's beside it."""
    tiny_checkpoint(folder / "checkpoints" / "last.pt", epoch=1, global_step=4)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / ".hydra" / "overrides.yaml").write_text("[]\n")
    (folder / "train.log").write_text("the old run's log\n")
    (folder / "metrics.jsonl").write_text('{"step": 4, "val/psnr": 20.0}\n')
    (folder / "my_notes.txt").write_text("mine\n")
    return folder


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refused_commands_leave_an_earlier_run_untouched(tmp_path, cache):
    run = old_run(tmp_path / "run")
    before = files_of(run)
    time.sleep(0.01)  # a rewrite would show in the modification times

    occupied = run_gancolor([f"hydra.run.dir={run}", "logger=none"], tmp_path, cache, timeout=120)
    assert occupied.returncode == 2
    assert one_error_line(occupied) == (
        f"gancolor: error: {run} already holds a run: continue it with resume={run}, choose a new folder, "
        "or add overwrite=true to replace it"
    )
    refused_resume = run_gancolor([f"resume={run}", "data.batch_size=8"], tmp_path, cache, timeout=120)
    assert refused_resume.returncode == 2
    assert "cannot change data.batch_size=8" in one_error_line(refused_resume)
    assert files_of(run) == before  # not a byte of .hydra/ nor train.log rewritten, no lock left


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path, cache):
    from gancolor.run_folder import LOCK_FILE, RunLock

    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this test: alive
    result = run_gancolor([f"hydra.run.dir={folder}", "logger=none"], tmp_path, cache, timeout=120)
    assert result.returncode == 2
    assert f"{folder} is in use by another run (pid {os.getpid()} on" in one_error_line(result)
    assert [p.name for p in folder.iterdir()] == [LOCK_FILE]

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / LOCK_FILE).write_text(f"{gone.stdout.strip()} {socket.gethostname()}\n")  # its process has ended
    lock = RunLock(folder).acquire()
    assert (folder / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    with pytest.raises(UserError, match="is in use by another run"):
        RunLock(folder).acquire()
    lock.release()
    assert list(folder.iterdir()) == []

    new = tmp_path / "a" / "b"
    with RunLock(new):
        assert new.is_dir()
    assert not (tmp_path / "a").exists(), "a lock that made folders for a run that never started removes them"


def test_overwrite_replaces_only_what_a_run_wrote(tmp_path):
    from gancolor.run_folder import refuse_occupied

    run = old_run(tmp_path / "run")
    with pytest.raises(UserError, match="already holds a run"):
        refuse_occupied(run, overwrite=False)
    assert files_of(run)
    refuse_occupied(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["my_notes.txt"]
    refuse_occupied(tmp_path / "new", overwrite=False)  # nothing there: nothing to refuse


def test_the_run_files_list_names_what_training_writes():
    from gancolor.loggers import WANDB_ID_FILE
    from gancolor.models.cic import PRIOR_FILE
    from gancolor.run_folder import RUN_FILES

    assert {WANDB_ID_FILE, PRIOR_FILE} <= set(RUN_FILES)


@pytest.mark.slow
def test_overwrite_true_trains_into_a_folder_that_held_a_run(tmp_path, cache):
    run = old_run(tmp_path / "run")
    result = run_gancolor(
        [f"hydra.run.dir={run}", "overwrite=true", "logger=none", "data.image_size=32", "generator.ngf=8",
         "discriminator.ndf=8", "trainer.max_steps=1", "trainer.progress_bar=false"],
        tmp_path, cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the old run's log" not in (run / "train.log").read_text()
    assert '"val/psnr": 20.0' not in (run / "metrics.jsonl").read_text()
    assert (run / "my_notes.txt").read_text() == "mine\n"
    assert not (run / ".gancolor.lock").exists(), "the lock goes when the run ends"


# -- options that would silently do nothing -----------------------------------------------


def test_an_option_without_effect_is_named_in_one_warning():
    from gancolor import noops
    from gancolor.commandline import config_problem

    def warning(*overrides):
        cfg, problem = config_problem(list(overrides))
        assert problem is None
        return noops.warning([(cfg, list(overrides))])

    assert warning("model=cic", "loss.gan_mode=lsgan", "trainer.lr_step_gamma=0.5") == (
        "gancolor: warning: no effect in this config: loss.gan_mode (model=cic has no GAN term while loss.lambda_gan is 0); "
        "trainer.lr_step_gamma (it is trainer.lr_policy=step's)"
    )
    assert warning("model=cic", "loss.gan_mode=lsgan", "loss.lambda_gan=0.1") is None
    assert warning("model=cic") is None, "defaults nobody set are not the user's mistake"
    assert warning("trainer.lr_policy=step", "trainer.lr_step_gamma=0.5") is None
    assert warning("trainer.max_epochs=3", "trainer.pretrain_epochs=5") == (
        "gancolor: warning: trainer.pretrain_epochs=5 covers all 3 epochs (trainer.max_epochs): G trains on the "
        "pixel loss alone and no adversarial epoch runs"
    )
    assert warning("trainer.max_epochs=3", "trainer.pretrain_epochs=2") is None


def test_trainer_ddp_without_torchrun_says_it_trains_one_process(monkeypatch):
    from gancolor import noops
    from gancolor.commandline import config_problem

    cfg, problem = config_problem(["trainer=ddp"])
    assert problem is None
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert noops.warning([(cfg, ["trainer=ddp"])]) == (
        "gancolor: warning: trainer=ddp without torchrun: one process; start it with torchrun --nproc_per_node=N -m gancolor ..."
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun --nproc_per_node=2 sets in each process
    assert noops.warning([(cfg, ["trainer=ddp"])]) is None


def test_every_option_of_the_no_effect_table_exists():
    from gancolor.config_check import has_key
    from gancolor.noops import NO_EFFECT
    from helpers import compose

    configs = [compose(), compose("model=cic")]
    assert all(any(has_key(cfg, rule.option) for cfg in configs) for rule in NO_EFFECT)


# -- StarGAN's validation metrics that repeat ----------------------------------------------


def test_stargan_says_why_validations_without_a_g_step_repeat(tmp_path, small_photo_folder, caplog):
    """G trains every n_critic-th iteration; with 1 iteration per epoch and n_critic=3
    the first two epochs validate the same, untrained G, to the last digit."""
    from gancolor.build import build, build_recipe
    from gancolor.loggers import Logger
    from helpers import compose, shrink

    cfg = shrink(compose("model=stargan", f"data.root={small_photo_folder}", "data.val_fraction=0.25", "logger=none",
                         "model.n_critic=3", "model.log_domains=false", "trainer.max_epochs=3", "trainer.lr_decay_epochs=0",
                         "trainer.log_every_n_steps=1", "trainer.num_samples=1"))
    cfg.data.batch_size = 6  # 6 training photos: 1 iteration per epoch

    class Rows(Logger):
        rows: list = []

        def log_metrics(self, metrics, step):
            self.rows.append(metrics)

    trainer, data = build(cfg.trainer, "trainer"), build(cfg.data, "data")
    data.setup()
    logger = Rows()
    with caplog.at_level("WARNING", logger="gancolor"):
        trainer.fit(build_recipe(cfg), data, tmp_path / "run", logger, {})
    val = [r["val/psnr"] for r in logger.rows if "val/psnr" in r]
    assert len(val) == 3 and val[0] == val[1] != val[2]  # G's first step: iteration 2, in epoch 3
    notes = [r.getMessage() for r in caplog.records if "n_critic" in r.getMessage()]
    assert notes == [
        "stargan: G trains once every 3 iterations (model.n_critic) but validation comes every 1 (1 per epoch, "
        "trainer.val_every_n_epochs=1): a validation after no G step repeats the previous metrics exactly, "
        "because G did not change"
    ]


# -- a GPU preset on a CPU ------------------------------------------------------------------


def test_the_cic_zhang2016_preset_warns_when_it_starts_on_a_cpu(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    result = run_gancolor(["experiment=cic_zhang2016", "trainer.device=cpu", "data=folder",
                           f"data.root={tmp_path / 'empty'}", "logger=none"], tmp_path, cache, timeout=300)
    assert result.returncode == 2  # the empty folder ends it before any step
    output = result.stdout + result.stderr
    assert output.count("experiment=cic_zhang2016 is a GPU preset and this run is on the CPU") == 1
    assert "GPU preset" in (REPO / "conf" / "experiment" / "cic_zhang2016.yaml").read_text()
