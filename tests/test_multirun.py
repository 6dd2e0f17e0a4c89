"""Hydra multirun: one run folder per job and, at the end, summary.md / summary.csv."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gancolor.multirun import main, write_summary
from helpers import read_metrics as metrics_rows
from warm import run_gancolor

TINY = [
    "data.image_size=32",
    "data.batch_size=3",
    "data.repeats=1",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "trainer.max_epochs=1",
    "trainer.pretrain_epochs=0",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=1",
    "trainer.progress_bar=false",
    "trainer.device=cpu",
]


@pytest.mark.slow
def test_two_job_multirun_leaves_two_run_folders_and_a_summary(tmp_path):
    sweep_dir = tmp_path / "multirun"
    result = run_gancolor(["-m", *TINY, "loss.gan_mode=vanilla,lsgan", f"hydra.sweep.dir={sweep_dir}"], tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_pix2pix", "1_pix2pix"]  # hydra.sweep.subdir: <job num>_<model>
    finals = []
    for job, gan_mode in zip(jobs, ["vanilla", "lsgan"]):
        assert f"loss.gan_mode={gan_mode}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert OmegaConf.load(job / "config.yaml").loss.gan_mode == gan_mode
        for name in ("metrics.jsonl", "train.log", "checkpoints/last.pt", "wandb_id.txt"):
            assert (job / name).is_file(), (job.name, name)
        assert list((job / "wandb").glob("offline-run-*")), "each job is its own W&B run, inside its folder"
        finals.append([r for r in metrics_rows(job) if "val/psnr" in r][-1])

    with (sweep_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["loss.gan_mode"] for r in rows] == ["vanilla", "lsgan"]  # the swept key gets a column
    assert [r["folder"] for r in rows] == ["0_pix2pix", "1_pix2pix"]
    for row, final in zip(rows, finals):
        assert row["status"] == "ok"
        assert int(row["step"]) == final["step"]
        for key in ("val/psnr", "val/ssim", "val/mae", "val/mse", "val/colorfulness_ratio"):
            assert float(row[key]) == pytest.approx(final[key]), key
        assert "data.image_size=32" in row["overrides"]

    md = (sweep_dir / "summary.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    assert "loss.gan_mode" in header and "val/psnr" in header and "best val/psnr" in header
    assert sum(line.startswith("| 0 |") or line.startswith("| 1 |") for line in md.splitlines()) == 2
    assert "`data.image_size=32`" in md  # overrides every job shared are listed once, above
    assert "multirun summary written" in result.stderr + result.stdout

    # The jobs' W&B runs share a group named after the multirun folder.
    from test_loggers import read_offline_run

    for job in jobs:
        run = read_offline_run(job)
        assert run.run.run_group == "multirun-multirun"
        assert "val/psnr" in run.keys() and "train/G/loss" in run.keys()


# -- the table itself, from folders made by hand ---------------------------------------------


def fake_job(folder: Path, num: int, overrides: list[str], rows: list[dict] | None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), folder / ".hydra" / "hydra.yaml")
    if rows is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_summary_lists_every_job_with_its_final_and_best_metrics(tmp_path):
    fake_job(tmp_path / "a" / "10_pix2pix", 10, ["model.lr=1e-3", "loss.gan_mode=hinge|x"], [
        {"step": 5, "train/G/loss": 1.0},
        {"step": 5, "val/psnr": 21.0, "val/ssim": 0.5, "epoch": 0},
        {"step": 10, "val/psnr": 20.0, "val/ssim": 0.6, "epoch": 1},
    ])
    # Hydra's sweeper writes booleans as Python does; the table shows them as they are typed.
    fake_job(tmp_path / "a" / "2_pix2pix", 2, ["model.lr=2e-4", "loss.gan_mode=vanilla", "trainer.progress_bar=False"],
             [{"step": 3, "train/G/loss": 2.0}])
    fake_job(tmp_path / "b" / "3_cyclegan", 3, ["model.lr=2e-4", "loss.gan_mode=lsgan", "model=cyclegan"], None)
    (tmp_path / "a" / "10_pix2pix" / "metrics.jsonl").open("a").write('{"step": 11, "val/psn')  # killed mid-write

    md_path, csv_path = write_summary(tmp_path)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["job"] for r in rows] == ["2", "3", "10"]  # by job number, not by name
    assert [r["folder"] for r in rows] == ["a/2_pix2pix", "b/3_cyclegan", "a/10_pix2pix"]
    assert [r["status"] for r in rows] == ["no validation", "no metrics", "ok"]
    assert [r["model"] for r in rows] == ["", "cyclegan", ""]
    last = rows[2]
    assert (last["val/psnr"], last["val/ssim"], last["step"], last["epoch"]) == ("20.0", "0.6", "10", "1")
    assert (last["best val/psnr"], last["best step"]) == ("21.0", "5")

    md = md_path.read_text()
    assert "hinge\\|x" in md  # a pipe in a value does not break the table
    assert "| false |" in md and "False" not in md
    assert [r["trainer.progress_bar"] for r in rows] == ["false", "", ""]
    assert "Best val/psnr (max): 21, job 10" in md


def test_summary_follows_the_monitor_and_its_mode(tmp_path):
    for num, mae in enumerate([0.3, 0.1, 0.2]):
        fake_job(tmp_path / f"{num}_pix2pix", num, [f"seed={num}"], [{"step": 1, "val/mae": mae, "val/psnr": 10.0 + num}])
    md_path, csv_path = write_summary(tmp_path, monitor="val/mae", mode="min")
    assert "Best val/mae (min): 0.1, job 1 (seed=1)" in md_path.read_text()
    assert list(csv.DictReader(csv_path.open()))[0]["best val/mae"] == "0.3"


def test_summary_can_be_rebuilt_from_the_command_line(tmp_path, capsys):
    fake_job(tmp_path / "0_pix2pix", 0, ["trainer.max_epochs=1"], [{"step": 1, "val/psnr": 12.5}])
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith(f"# Multirun summary: {tmp_path}") and "| 0 | 1 | ok | 1 |" in out  # one job: all its keys
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "summary.md").is_file()
    assert write_summary(tmp_path / "nothing") is None


def test_the_table_is_kept_up_to_date_after_every_job_and_marks_failures(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode

    from gancolor.multirun import MultirunSummary

    callback = MultirunSummary()
    ok = fake_job(tmp_path / "0_pix2pix", 0, ["seed=0"], [{"step": 1, "val/psnr": 12.0}])
    broken = fake_job(tmp_path / "1_pix2pix", 1, ["seed=1"], [{"step": 1, "train/G/loss": 3.0}])
    for folder, status, value in ((ok, JobStatus.COMPLETED, 12.0), (broken, JobStatus.FAILED, RuntimeError("nan\nloss"))):
        config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}, "sweep": {"dir": str(tmp_path)}}})
        config.hydra.mode = RunMode.MULTIRUN
        callback.on_job_end(config, JobReturn(status=status, _return_value=value))
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed")]
    assert (broken / "job_failed.txt").read_text() == "RuntimeError: nan loss\n"

    # A single run (not a multirun) leaves no table behind.
    (tmp_path / "summary.csv").unlink()
    single = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(ok)}, "sweep": {"dir": str(tmp_path)}}})
    single.hydra.mode = RunMode.RUN
    callback.on_job_end(single, JobReturn(status=JobStatus.COMPLETED, _return_value=1.0))
    assert not (tmp_path / "summary.csv").exists()


# -- mistakes under -m: checked before any job, and a failing job does not stop the others --


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["loss.lambda_L1=10,abc"], "loss.lambda_L1 must be a number, got 'abc' (multirun job 1: loss.lambda_L1=abc)"),
        (["loss.gan_mode=vanilla,lsgan", "trainer.max_epoch=1"],
         "unknown key trainer.max_epoch: did you mean trainer.max_epochs? (multirun job 0: loss.gan_mode=vanilla)"),
        (["model=pix2pix,stargan", "generator.ngf=8"], "generator.ngf needs generator=resnet (or unet) (multirun job 1: model=stargan)"),
        (["seed=range(0,2)", "data=glob(fold*)"], "missing data.root=... (required by data=folder) (multirun job 0: seed=0)"),
    ],
)
def test_every_job_of_a_sweep_is_checked_before_the_first_starts(overrides, expected, capsys):
    from gancolor.commandline import check_sweep

    with pytest.raises(SystemExit) as info:
        check_sweep(overrides)
    assert info.value.code == 2
    assert capsys.readouterr().err == f"gancolor: error: {expected}\n"


def test_a_sweep_expands_as_hydras_basic_sweeper_does():
    from gancolor.commandline import CONF_DIR
    from gancolor.config_check import sweep_jobs

    assert sweep_jobs(["a=1,2", "b=x", "c=range(0,2)"], CONF_DIR) == [
        ["a=1", "b=x", "c=0"], ["a=1", "b=x", "c=1"], ["a=2", "b=x", "c=0"], ["a=2", "b=x", "c=1"],
    ]
    assert sweep_jobs(["model=glob(p*)", "+x='a b'"], CONF_DIR) == [["model=pix2pix", "+x='a b'"]]


@pytest.mark.slow
def test_a_job_that_fails_is_marked_and_the_others_run(tmp_path):
    sweep_dir = tmp_path / "multirun"
    args = ["-m", *TINY, "trainer.max_steps=1", "logger=none", "loss.gan_mode=wgan,vanilla", f"hydra.sweep.dir={sweep_dir}"]
    result = run_gancolor(args, tmp_path, tmp_path / "cache")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gancolor: error:")]
    assert errors[0] == "gancolor: error: multirun job 0: loss.gan_mode must be one of vanilla, lsgan, hinge, got 'wgan'"
    assert errors[-1].startswith("gancolor: error: 1 multirun job(s) failed: job 0: loss.gan_mode must be one of")
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "ok")]
    assert not (sweep_dir / ".gancolor.lock").exists(), "the multirun's lock goes when it ends"

    again = run_gancolor(["-m", "seed=1,2", f"hydra.sweep.dir={sweep_dir}"], tmp_path, tmp_path / "cache", timeout=120)
    assert again.returncode == 2 and "already holds an earlier multirun" in again.stderr


def test_the_summary_says_when_jobs_cannot_be_told_apart(tmp_path):
    same = [{"step": 18, "val/psnr": 21.5, "val/ssim": 0.8}]
    for num, mode in enumerate(["vanilla", "lsgan", "hinge"]):
        fake_job(tmp_path / "all" / f"{num}_pix2pix", num, [f"loss.gan_mode={mode}"], same)
    md = write_summary(tmp_path / "all")[0].read_text()
    assert "No best val/psnr: all 3 jobs ended with identical metrics" in md and "Best val/psnr" not in md

    for num, psnr in enumerate([21.5, 21.5, 23.0]):
        fake_job(tmp_path / "some" / f"{num}_pix2pix", num, [f"seed={num}"], [{"step": 18, "val/psnr": psnr}])
    md = write_summary(tmp_path / "some")[0].read_text()
    assert "Best val/psnr (max): 23, job 2 (seed=2)" in md
    assert "Indistinguishable (identical metrics): jobs 0, 1" in md


@pytest.mark.slow
def test_a_resumed_job_keeps_its_overrides_number_and_wandb_group(tmp_path):
    from test_loggers import read_offline_run  # reads the offline run file wandb wrote

    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "trainer.max_steps=1", "logger=wandb", "loss.gan_mode=vanilla,lsgan", f"hydra.sweep.dir={sweep_dir}"]
    result = run_gancolor(args, tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    job = sweep_dir / "0_pix2pix"
    assert read_offline_run(job).run.run_group == "multirun-sweep"

    resumed = run_gancolor([f"resume={job}", "trainer.max_steps=2"], tmp_path, tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "loss.gan_mode=vanilla" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
    assert OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.num == 0
    assert "resumed with: resume=" in (job / "train.log").read_text()
    assert read_offline_run(job).run.run_group == "multirun-sweep"  # the resumed session's
    rows = list(csv.DictReader((write_summary(sweep_dir)[1]).open()))
    assert [(r["job"], r["loss.gan_mode"], r["step"]) for r in rows] == [("0", "vanilla", "2"), ("1", "lsgan", "1")]
