"""Checkpoints users can trust: exact resume after SIGKILL or SIGTERM, fallback past a
broken checkpoint, refused overrides, init_from."""

import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from gancolor.checkpoint import load_checkpoint
from helpers import one_error_line, run_gancolor
from helpers import read_metrics as rows
from helpers import strip_speed as comparable
import warm

# 6 sample photos, batch 2, repeats 4: 12 steps per epoch; epoch 1 is pretraining.
# A checkpoint after every step, so a kill anywhere leaves a mid-epoch one.
RUN = [
    "data.image_size=32",
    "data.batch_size=2",
    "data.repeats=4",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "trainer.max_epochs=3",
    "trainer.pretrain_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.save_every_n_steps=1",
    "trainer.num_samples=1",
    "trainer.progress_bar=false",
    "logger=none",
]
STEPS_PER_EPOCH = 12
TOTAL_STEPS = 3 * STEPS_PER_EPOCH

pytestmark = pytest.mark.slow


# Each command is a process of its own, forked from one that did the imports (tests/warm.py).
def gancolor(args, cache):
    return warm.run_gancolor(args, None, cache)


def start(args, cache):
    return warm.TrainCommand(args, None, cache)


def last_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except json.JSONDecodeError:  # a line being written
        return 0


def interrupt(args, cache, run: Path, after_step: int, sig: int) -> warm.TrainCommand:
    """Start a run and send `sig` once it has logged `after_step`."""
    process = start([*args, f"hydra.run.dir={run}"], cache)
    deadline = time.time() + 240
    while last_step(run) < after_step:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(sig)
    process.wait(timeout=120)
    return process


def assert_same_run(a: Path, b: Path, also_validated_at: int | None = None) -> None:
    """Run b logged what run a did, and ended with the same weights. A run stopped by a
    limit validated where it stopped (`also_validated_at`), which a's did not."""
    ra = comparable(rows(a))
    rb = [r for r in comparable(rows(b)) if not ("val/psnr" in r and r["step"] == also_validated_at)]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (x["step"], key)
    ga, gb = (load_checkpoint(p / "checkpoints" / "last.pt")["nets"] for p in (a, b))
    for key in ga:
        if ga[key].is_floating_point():
            torch.testing.assert_close(ga[key], gb[key], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache) -> Path:
    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    result = gancolor([*RUN, f"hydra.run.dir={run}"], cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_step(run) == TOTAL_STEPS
    return run


@pytest.mark.parametrize(
    "after_step",
    [STEPS_PER_EPOCH // 2, STEPS_PER_EPOCH + 5],
    ids=["killed-in-pretraining-resumed-across-the-phase-boundary", "killed-mid-adversarial-epoch"],
)
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, cache, uninterrupted, after_step):
    run = tmp_path / "killed"
    killed = interrupt(RUN, cache, run, after_step, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 0 < ckpt["batch_in_epoch"] < STEPS_PER_EPOCH, "the kill left a mid-epoch checkpoint"

    resumed = gancolor([f"resume={run}"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(tmp_path.glob("runs")), "a resume continues in the same run folder"
    assert_same_run(uninterrupted, run)


def test_sigterm_saves_mid_epoch_exits_0_and_resumes_exactly(tmp_path, cache, uninterrupted):
    run = tmp_path / "preempted"
    stopped = interrupt(RUN, cache, run, STEPS_PER_EPOCH + 3, signal.SIGTERM)
    stderr = stopped.communicate()[1]
    assert stopped.returncode == 0, stderr[-2000:]
    assert f"resume with: python -m gancolor resume={run}" in stderr
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == last_step(run) and ckpt["phase"] == "adversarial"

    # A real interpreter, so another string-hash seed than the warm runs': a result that
    # hung on hashing or set order would differ here.
    resumed = run_gancolor([f"resume={run / 'checkpoints' / 'last.pt'}"], tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(uninterrupted, run)


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_stopped_by_max_steps_extends_exactly_and_refuses_to_shrink(tmp_path, cache, uninterrupted):
    # Stopped by max_steps 5 steps into epoch 2: the epoch must not end there.
    run, cut = tmp_path / "short", STEPS_PER_EPOCH + 5
    assert gancolor([*RUN, f"trainer.max_steps={cut}", f"hydra.run.dir={run}"], cache).returncode == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (cut, 1, 5)

    # One refusal through the command line (max_epochs' is checked in-process below).
    before = files_in(run)
    refused = gancolor([f"resume={run}", f"trainer.max_steps={cut}"], cache)
    assert refused.returncode == 2
    assert "leaves nothing to train" in one_error_line(refused)
    assert files_in(run) == before, "a refused resume leaves the run folder as it was"

    resumed = gancolor([f"resume={run}", f"trainer.max_steps={TOTAL_STEPS}"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(uninterrupted, run, also_validated_at=cut)


def test_truncated_checkpoint_fails_in_one_line_or_falls_back(tmp_path, cache):
    short = ["trainer.max_steps=5", "trainer.keep_last=3"]
    run = tmp_path / "run"
    assert gancolor([*RUN, *short, f"hydra.run.dir={run}"], cache).returncode == 0
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000003.pt", "step_00000004.pt", "step_00000005.pt"]
    assert (folder / "last.pt").samefile(folder / "step_00000005.pt")
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 3])  # also truncates step_5: same file

    result = gancolor([f"resume={folder / 'last.pt'}"], cache)  # exactly this file: an error
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]
    assert "last.pt" in result.stderr and result.stderr.startswith("gancolor: error: cannot read checkpoint")

    result = gancolor([f"resume={run}", "trainer.max_steps=7"], cache)  # a run folder: fall back
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "resuming from the newest good checkpoint instead" in log and "step_00000004.pt" in log
    assert load_checkpoint(folder / "last.pt")["global_step"] == 7
    assert [r["step"] for r in rows(run) if "train/G/pixel" in r or "train/G/loss" in r] == list(range(1, 8))


def test_resume_refuses_overrides_that_change_the_experiment(tmp_path, cache, uninterrupted):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    extend = ["trainer.max_epochs=4", f"trainer.max_steps={TOTAL_STEPS + 1}"]
    result = gancolor([f"resume={run}", "model.lr=0.1", *extend], cache)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot change model.lr=0.1" in result.stderr
    # An allowed key with a value only the job's constructors refuse: Hydra has already
    # rewritten .hydra/ and appended to train.log by then; both are put back.
    before = files_in(run)
    result = gancolor([f"resume={run}", "trainer.device=gpu", *extend], cache)
    assert result.returncode == 2
    assert "trainer.device must be auto, cpu, cuda or cuda:N, got 'gpu'" in one_error_line(result)
    assert files_in(run) == before, "a refused resume leaves the run folder as it was"
    before = rows(run)
    result = gancolor([f"resume={run}", *extend, "logger=none", "data.num_workers=0"], cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert rows(run)[: len(before)] == before and last_step(run) == TOTAL_STEPS + 1


def test_a_resume_may_repeat_the_runs_group_choices_whatever_allowed_keys_they_compose(tmp_path, cache, small_photo_folder):
    run = tmp_path / "run"
    own = [
        "data=folder", f"data.root={small_photo_folder}", "data.image_size=32", "data.num_workers=0",
        "generator.ngf=8", "discriminator.ndf=8", "trainer.progress_bar=false", "logger=none",
    ]  # fmt: skip
    first = gancolor([*own, "trainer.max_steps=2", f"hydra.run.dir={run}"], cache)
    assert first.returncode == 0, first.stderr[-2000:]
    # The run's own command line less an allowed key: data=folder now composes
    # num_workers=auto, not the run's 0, and is still the run's own choice.
    again = [o for o in own if o != "data.num_workers=0"]
    resumed = gancolor([*again, "trainer.max_steps=3", f"resume={run}"], cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 3 and ckpt["config"]["data"]["num_workers"] == 0  # the stored node stays
    # Keys inside the choice are still checked one by one, and another choice is refused.
    for change in ("data.batch_size=2", "model=cyclegan"):
        refused = gancolor([*again, "trainer.max_steps=4", f"resume={run}", change], cache)
        assert refused.returncode == 2 and f"cannot change {change} (allowed" in one_error_line(refused)


def test_init_from_loads_weights_and_starts_at_step_zero(tmp_path, cache, uninterrupted):
    ckpt = uninterrupted / "checkpoints" / "last.pt"

    run = tmp_path / "finetune"
    result = gancolor([*RUN, f"init_from={ckpt}", "trainer.max_steps=2", "trainer.pretrain_epochs=0", f"hydra.run.dir={run}"], cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["step"] for r in rows(run) if "train/G/loss" in r] == [1, 2]
    assert "initialised the nets from" in (run / "train.log").read_text()
    new = load_checkpoint(run / "checkpoints" / "last.pt")
    assert new["global_step"] == 2 and new["optimizers"]["G"]["state"][0]["step"] == 2  # fresh Adam

    # A run folder, as ckpt= of colorize and evaluate takes: its best.pt, else its last.pt.
    folder_run = tmp_path / "from-folder"
    result = gancolor([*RUN, f"init_from={uninterrupted}", "trainer.max_steps=1", f"hydra.run.dir={folder_run}"], cache)
    assert result.returncode == 0, result.stderr[-2000:]
    best = uninterrupted / "checkpoints" / "best.pt"
    assert f"init_from: using {best} (the run's best)" in (folder_run / "train.log").read_text()

    other = gancolor([*RUN, f"init_from={ckpt}", "generator.ngf=16", f"hydra.run.dir={tmp_path / 'x'}"], cache)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "does not fit these nets" in other.stderr and "different shape" in other.stderr


def test_resume_config_takes_the_stored_config_and_only_allowed_overrides():
    from omegaconf import OmegaConf

    from gancolor.errors import ConfigError
    from gancolor.resume import resume_config

    stored = {"seed": 1, "model": {"lr": 0.0002}, "trainer": {"max_steps": 5}, "logger": {"name": "old"}}
    composed = OmegaConf.create(
        {"seed": 9, "model": {"lr": 0.1}, "trainer": {"max_steps": 8, "keep_last": 2}, "logger": {"name": "new"}}
    )
    merged = resume_config(composed, stored, ["resume=run", "trainer.max_steps=8", "+trainer.keep_last=2", "logger=new", "hydra.run.dir=x"])
    assert merged.seed == 1 and merged.model.lr == 0.0002  # the stored experiment
    assert merged.trainer.max_steps == 8 and merged.trainer.keep_last == 2 and merged.logger.name == "new"
    with pytest.raises(ConfigError, match="cannot change model.lr=0.1, seed=9"):
        resume_config(composed, stored, ["model.lr=0.1", "seed=9"])
    # The run's own value changes nothing: a command line copied from the run passes.
    same = OmegaConf.create({**stored, "model": {"lr": 2e-4}, "seed": 1})
    assert resume_config(same, stored, ["model.lr=0.0002", "seed=1"]).model.lr == 0.0002
    with pytest.raises(ConfigError, match="cannot change seed=9$|cannot change seed=9 "):
        resume_config(OmegaConf.create({**stored, "seed": 9}), stored, ["model.lr=0.0002", "seed=9"])
    # A group choice: the run's own (choices, from its .hydra/hydra.yaml) changes nothing and
    # keeps its stored node; without that record, the node it composes must be the stored
    # one but for keys a resume may change anyway.
    stored = {"data": {"root": "a", "num_workers": 0}, "trainer": {"max_steps": 5}}
    composed = OmegaConf.create({"data": {"root": "a", "num_workers": "auto"}, "trainer": {"max_steps": 8}})
    merged = resume_config(composed, stored, ["data=folder", "trainer.max_steps=8"], choices={"data": "folder"})
    assert merged.data.num_workers == 0 and merged.trainer.max_steps == 8
    with pytest.raises(ConfigError, match="cannot change data=sample"):
        resume_config(composed, stored, ["data=sample"], choices={"data": "folder"})
    assert resume_config(composed, stored, ["data=folder"]).data.num_workers == 0
    other_root = OmegaConf.create({"data": {"root": "b", "num_workers": 0}})
    with pytest.raises(ConfigError, match="cannot change data=folder"):
        resume_config(other_root, stored, ["data=folder"])


def test_a_resume_must_leave_something_to_train_with_as_many_processes():
    from omegaconf import OmegaConf

    from gancolor.errors import ConfigError
    from gancolor.resume import check_resume_continues

    mid_epoch = {"global_step": 17, "epoch": 1, "batch_in_epoch": 5, "rng": [{}]}
    config = lambda **trainer: OmegaConf.create({"trainer": {"max_steps": None, "max_epochs": 3, **trainer}})  # noqa: E731
    check_resume_continues(config(), mid_epoch, world_size=1)
    check_resume_continues(config(max_steps=18, max_epochs=2), mid_epoch, world_size=1)  # epoch 2 is unfinished
    refusals = [
        (config(max_steps=17), 1, "the run is at step 17, epoch 2; trainer.max_steps=17 (the run's own unless given) leaves"),
        # The way on that works: trainer.max_epochs alone would keep the run's own max_steps.
        (config(max_steps=5, max_epochs=9), 1, "raise it above 17, or give trainer.max_steps=null to train up to trainer.max_epochs"),
        (config(max_epochs=1), 1, "trainer.max_epochs=1 leaves nothing to train"),
        (config(), 2, "the run was trained by 1 process(es) and this command starts 2"),
    ]
    for cfg, world_size, message in refusals:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_resume_continues(cfg, mid_epoch, world_size)
    finished = {"global_step": 36, "epoch": 3, "batch_in_epoch": 0, "rng": {}}  # a one-process checkpoint of old
    with pytest.raises(ConfigError, match=re.escape("the run is at step 36, 3 epochs done; trainer.max_epochs=3 leaves")):
        check_resume_continues(config(), finished, world_size=1)


def test_drop_metrics_after_keeps_the_rows_up_to_the_checkpoint(tmp_path):
    from gancolor.resume import drop_metrics_after

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3, 4)) + "\n")
    drop_metrics_after(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    drop_metrics_after(tmp_path / "none.jsonl", 2)  # a run that logged nothing yet
    assert not (tmp_path / "none.jsonl").exists()
