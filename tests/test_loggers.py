"""W&B logging with the real wandb library, offline: everything stays in the run folder,
and what was logged is read back from the run file `wandb sync` would upload."""

import json
import logging
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor.errors import ConfigError
from gancolor.loggers import (
    JsonlLogger,
    Logger,
    MultiLogger,
    TrackerError,
    WANDB_ID_FILE,
    WandbLogger,
    resolve_wandb_mode,
    stored_wandb_run_id,
    to_uint8_image,
    wandb_api_key_configured,
)
from helpers import compose

WANDB_ENV = (
    "WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_DISABLED", "WANDB_CONFIG_DIR", "NETRC", "WANDB_SWEEP_ID", "WANDB_DATA_DIR",
)


# -- reading an offline run back -----------------------------------------------------------
# wandb writes run-<id>.wandb as a LevelDB-style log (32 KiB blocks, 7-byte chunk
# headers) of wandb_internal_pb2.Record protobufs, after a 7-byte ":W&B" file header.


def wandb_records(run_file: Path):
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start, MIDDLE/LAST extend
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


class OfflineRun:
    """What one offline run file says: history rows by step, summary, config, artifacts."""

    def __init__(self, run_file: Path) -> None:
        self.file = run_file
        self.history: dict[int, dict] = {}
        self.summary: dict = {}
        self.config: dict = {}
        self.artifacts: list = []
        self.run = None
        self.exit_code = None
        for record in wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = self.history.setdefault(record.history.step.num, {})
                for item in record.history.item:
                    _set(row, item)
            elif kind == "summary":
                for item in record.summary.update:
                    _set(self.summary, item)
            elif kind == "run":
                self.run = record.run
                for item in record.run.config.update:
                    self.config[item.key] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    self.config[item.key] = json.loads(item.value_json)
            elif kind == "artifact":
                self.artifacts.append(record.artifact)
            elif kind == "exit":
                self.exit_code = record.exit.exit_code

    def keys(self) -> set[str]:
        return {k for row in self.history.values() for k in row}


def _set(target: dict, item) -> None:
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*"))


def read_offline_run(run_dir: Path, index: int = -1) -> OfflineRun:
    """The index-th session's run; the last: the one wandb_id.txt names where it exists.
    Folder names sort by start second, then by random run id: two sessions that start
    within one second are in either order."""
    runs = offline_runs(run_dir)
    latest = run_dir / WANDB_ID_FILE
    if index == -1 and latest.is_file():
        runs = [folder for folder in runs if folder.name.endswith("-" + latest.read_text().strip())]
    return read_run_folder(runs[index])


def read_run_folder(folder: Path, timeout: float = 30.0) -> OfflineRun:
    """The run as written once finished: run.finish() returns before wandb's writer
    process has flushed the file, so wait for the record that ends it."""
    deadline = time.monotonic() + timeout
    while True:
        run = OfflineRun(next(folder.glob("run-*.wandb")))
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """WANDB_MODE=offline and nothing else from the developer's environment."""
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "run"


def png(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size * 3, 3), dtype=np.uint8)).save(path)
    return path


# -- the logger on its own -----------------------------------------------------------------


def test_offline_run_stays_in_the_run_folder_and_reads_back(offline, caplog):
    run_dir = offline
    run_dir.mkdir()
    ckpt = run_dir / "checkpoints" / "last.pt"
    ckpt.parent.mkdir()
    torch.save({"nets": {"w": torch.zeros(3)}}, ckpt)
    config = {"model": {"name": "pix2pix", "lr": 2e-4}, "loss": {"lambda_L1": 100.0}}

    with caplog.at_level(logging.INFO, logger="gancolor.loggers"):
        logger = WandbLogger(
            run_dir=run_dir, run_config=config, project="gancolor-test", group="g1", tags=["a", "b"],
            log_checkpoints=True,
        )
        run_id = logger.run_id
        logger.log_metrics({"train/G/loss": 1.5, "train/D/out_real": 0.3, "lr/G": 2e-4, "epoch": 0, "phase": 1}, step=10)
        logger.log_metrics({"val/psnr": 20.0, "val/ssim": 0.8, "epoch": 0}, step=10)
        logger.log_image("val/samples", png(run_dir / "samples" / "epoch_0001.png"), step=10, caption="gray | generated | truth")
        logger.log_validation_table(
            [
                {"gray": np.zeros((8, 8, 3), np.uint8), "generated": torch.rand(3, 8, 8), "truth": np.full((8, 8, 3), 200, np.uint8),
                 "psnr": torch.tensor(21.0), "ssim": 0.7},
                {"gray": np.zeros((8, 8, 3), np.uint8), "generated": torch.rand(3, 8, 8), "truth": np.full((8, 8, 3), 100, np.uint8),
                 "psnr": 19.0, "ssim": 0.9},
            ],
            step=10,
        )
        logger.log_checkpoint(ckpt, aliases=["latest", "epoch-1", "best"])
        logger.log_metrics({"val/psnr": 18.0, "val/ssim": 0.9, "epoch": 1}, step=20)  # worse: best stays
        logger.finish()

    # Everything wandb wrote for this run is inside the run folder.
    [folder] = offline_runs(run_dir)
    assert folder.name.endswith(f"-{run_id}")
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id == stored_wandb_run_id(run_dir)
    run = read_offline_run(run_dir)
    assert run.exit_code == 0

    assert run.run.project == "gancolor-test" and run.run.run_group == "g1" and list(run.run.tags) == ["a", "b"]
    assert run.run.display_name == "run"  # the run folder's name
    assert run.config["model"] == {"name": "pix2pix", "lr": 2e-4} and run.config["loss"]["lambda_L1"] == 100.0

    assert {"train/G/loss", "train/D/out_real", "lr/G", "val/psnr", "val/ssim", "val/samples", "val/per_image"} <= run.keys()
    assert run.history[10]["train/G/loss"] == 1.5 and run.history[10]["val/psnr"] == 20.0
    assert run.history[20]["val/psnr"] == 18.0
    assert run.history[10]["val/samples"]["_type"] == "image-file"
    assert run.history[10]["val/per_image"]["_type"] == "table-file" and run.history[10]["val/per_image"]["nrows"] == 2

    # The summary holds the last values and, apart, the best validation so far.
    assert run.summary["val/psnr"] == 18.0
    assert run.summary["best/val/psnr"] == 20.0 and run.summary["best/val/ssim"] == 0.8
    assert run.summary["best/step"] == 10 and run.summary["best/epoch"] == 0

    # Artifacts (the table's images, the checkpoint) are staged inside the run folder.
    by_type = {a.type: a for a in run.artifacts}
    assert set(by_type) == {"run_table", "model"}
    model = by_type["model"]
    assert model.name == f"model-{run_id}" and {"latest", "epoch-1", "best"} <= set(model.aliases)
    assert [c.path for c in model.manifest.contents] == ["checkpoint.pt"]
    for artifact in run.artifacts:
        for content in artifact.manifest.contents:
            assert Path(content.local_path).resolve().is_relative_to(run_dir.resolve()), content.local_path
            assert Path(content.local_path).is_file()
    table = next(c for c in by_type["run_table"].manifest.contents if c.path.endswith(".table.json"))
    table = json.loads(Path(table.local_path).read_text())
    assert table["columns"] == ["index", "gray", "generated", "truth", "psnr", "ssim"]
    assert [row[0] for row in table["data"]] == [0, 1] and [row[4] for row in table["data"]] == [21.0, 19.0]
    assert all(cell["_type"] == "image-file" for row in table["data"] for cell in row[1:4])
    assert sum(c.path.endswith(".png") for c in by_type["run_table"].manifest.contents) >= 4

    # One line says how to upload it, naming the folder that holds the run file.
    hints = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert hints and all(h.endswith(f"wandb sync {folder}") for h in hints)
    assert "WANDB_DATA_DIR" not in os.environ  # the staging redirect ends with the run


def test_checkpoints_are_not_uploaded_unless_asked(offline):
    offline.mkdir()
    (offline / "checkpoints").mkdir()
    torch.save({}, offline / "checkpoints" / "last.pt")
    logger = WandbLogger(run_dir=offline)
    logger.log_checkpoint(offline / "checkpoints" / "last.pt")
    logger.finish()
    assert not [a for a in read_offline_run(offline).artifacts if a.type == "model"]


def test_final_checkpoints_are_logged_at_finish_when_enabled(offline):
    folder = offline / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"step": 1}, folder / "last.pt")
    os.link(folder / "last.pt", folder / "best.pt")  # best is the last: one version, two aliases
    logger = WandbLogger(run_dir=offline, log_checkpoints=True)
    logger.finish()
    models = [a for a in read_offline_run(offline).artifacts if a.type == "model"]
    assert {alias for a in models for alias in a.aliases} >= {"latest", "best"}
    assert len({a.digest for a in models}) == 1


def test_latest_stays_on_the_final_last_pt_and_best_keeps_its_own_step(offline):
    from gancolor.checkpoint import CheckpointFolder

    folder = CheckpointFolder(offline / "checkpoints")
    folder.folder.mkdir(parents=True)

    def models():
        records = [a for a in read_offline_run(offline).artifacts if a.type == "model"]
        # W&B moves an alias to the newest version given it: the last record holding it wins.
        holder = lambda alias: json.loads([a for a in records if alias in a.aliases][-1].metadata)  # noqa: E731
        return records, holder("latest"), holder("best")

    # As the trainer logs them: step 3 improves (last.pt, also best.pt), step 4 does not.
    logger = WandbLogger(run_dir=offline, log_checkpoints=True)
    logger.log_checkpoint(folder.save({"global_step": 3}), aliases=["latest", "epoch-1", "best"], metadata={"step": 3})
    folder.mark_best(folder.last)
    logger.log_checkpoint(folder.save({"global_step": 4}), aliases=["latest", "step-4"], metadata={"step": 4})
    logger.finish()
    records, latest, best = models()
    assert len(records) == 2, "best.pt is the step-3 file already logged"
    assert (latest["file"], latest["step"], best["step"]) == ("last.pt", 4, 3)

    # A resumed session: best.pt is from the earlier one, so it goes up at the end, with
    # the step it was saved at; `latest` goes back to the final last.pt after it.
    logger = WandbLogger(run_dir=offline, log_checkpoints=True)
    logger.log_checkpoint(folder.save({"global_step": 5}), aliases=["latest", "step-5"], metadata={"step": 5})
    logger.finish()
    records, latest, best = models()
    assert (latest["file"], latest["step"]) == ("last.pt", 5)
    assert (best["file"], best["step"]) == ("best.pt", 3)


def test_resume_continues_the_stored_run_id(offline):
    first = WandbLogger(run_dir=offline)
    run_id = first.run_id
    first.log_metrics({"train/G/loss": 1.0}, step=5)
    first.finish()

    # The same folder reused for a fresh run is a new W&B run...
    fresh = WandbLogger(run_dir=offline)
    assert fresh.run_id != run_id and stored_wandb_run_id(offline) == fresh.run_id
    fresh.finish()
    (offline / "wandb_id.txt").write_text(run_id + "\n")

    # ...and a resumed one, given the stored id, continues the same W&B run; the
    # upload line then names every session of it.
    second = WandbLogger(run_dir=offline, run_id=stored_wandb_run_id(offline))
    assert second.run_id == run_id
    assert second.sync_hint() == f"upload it with: wandb sync --id {run_id} {offline}/wandb/offline-run-*-{run_id}*"
    second.log_metrics({"train/G/loss": 0.5}, step=6)
    second.finish()
    resumed = [f for f in offline_runs(offline) if run_id in f.name]
    assert len(resumed) == 2
    assert read_run_folder(resumed[-1]).history[6]["train/G/loss"] == 0.5

    # A new folder told the id (from a checkpoint's logger_run_id) joins that run too,
    # and the best value the trainer restored holds against a worse validation.
    other = WandbLogger(run_dir=offline.parent / "elsewhere", run_id=run_id)
    assert other.run_id == run_id
    other.log_summary({"best/val/psnr": 25.0})
    other.log_metrics({"val/psnr": 24.0}, step=7)
    other.finish()
    assert read_offline_run(offline.parent / "elsewhere").summary["best/val/psnr"] == 25.0


def test_stored_run_id_falls_back_to_wandb_folders(tmp_path):
    assert stored_wandb_run_id(tmp_path) is None
    (tmp_path / "wandb" / "offline-run-20260101_000000-aaaa1111").mkdir(parents=True)
    (tmp_path / "wandb" / "run-20260102_000000-bbbb2222").mkdir()
    (tmp_path / "wandb" / "offline-run-20260101_120000-aaaa1111-1").mkdir()  # resumed: -N
    assert stored_wandb_run_id(tmp_path) == "bbbb2222"


def test_a_failed_run_is_marked_failed(offline):
    logger = WandbLogger(run_dir=offline)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("training blew up")
        finally:
            logger.finish()
    assert read_offline_run(offline).exit_code == 1


def test_disabled_writes_nothing(offline, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    offline.mkdir()
    logger = WandbLogger(run_dir=offline, log_checkpoints=True)
    assert logger.run_id is None
    logger.log_metrics({"val/psnr": 1.0}, step=1)
    logger.log_validation_table([{"gray": np.zeros((4, 4, 3), np.uint8), "psnr": 1.0}], step=1)
    logger.finish()
    assert not (offline / "wandb_id.txt").exists() and not offline_runs(offline)


# -- online or offline -----------------------------------------------------------------------


@pytest.fixture
def clean_home(monkeypatch, tmp_path):
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    return home


def netrc(path: Path, machine: str, key: str = "k" * 40) -> Path:
    path.write_text(f"machine {machine}\n  login user\n  password {key}\n")
    path.chmod(0o600)
    return path


def test_without_a_key_runs_go_offline(clean_home):
    assert not wandb_api_key_configured()
    mode, why = resolve_wandb_mode()
    assert mode == "offline" and "wandb login" in why


@pytest.mark.parametrize("machine", ["api.wandb.ai", "api.forge.coreweave.com"])
def test_wandb_login_netrc_means_online(clean_home, machine):
    netrc(clean_home / ".netrc", machine)
    assert wandb_api_key_configured()
    assert resolve_wandb_mode()[0] == "online"


def test_api_key_variable_and_netrc_variable(clean_home, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode()[0] == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(netrc(tmp_path / "elsewhere.netrc", "api.wandb.ai")))
    assert resolve_wandb_mode()[0] == "online"


def test_a_key_for_another_server_does_not_count(clean_home, monkeypatch):
    netrc(clean_home / ".netrc", "api.wandb.ai")
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.local:8080")
    assert not wandb_api_key_configured()
    netrc(clean_home / ".netrc", "wandb.local:8080")
    assert wandb_api_key_configured()
    # `wandb login --host` keeps the server in wandb's settings file instead.
    monkeypatch.delenv("WANDB_BASE_URL")
    settings = clean_home / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = http://wandb.local:8080\n")
    assert wandb_api_key_configured()


def test_wandb_mode_always_wins(clean_home, monkeypatch):
    netrc(clean_home / ".netrc", "api.wandb.ai")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("online") == ("offline", "WANDB_MODE=offline")
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode()[0] == "offline"
    monkeypatch.setenv("WANDB_MODE", "Disabled")
    assert resolve_wandb_mode()[0] == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("disabled")[0] == "disabled"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE must be one of online, offline, disabled"):
        resolve_wandb_mode()


# -- a tracker that cannot start --------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing answers there


@pytest.fixture
def no_server(offline, monkeypatch):
    """Online, with a key, at a W&B server that refuses connections: wandb.init fails
    for real, in about WANDB_INIT_TIMEOUT seconds."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    return offline


def test_a_start_that_fails_takes_back_what_wandb_made_for_it(no_server, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    WandbLogger(run_dir=no_server).finish()  # an earlier session, as a resumed run has
    state = lambda: {p.name: os.readlink(p) if p.is_symlink() else None for p in (no_server / "wandb").iterdir()}  # noqa: E731
    before = state()
    # In a fresh process: the wandb service this one started for earlier sessions would
    # hold the failing start for a minute and a half, whatever WANDB_INIT_TIMEOUT says.
    import subprocess
    import sys

    start = f"from gancolor.loggers import WandbLogger; WandbLogger(run_dir={str(no_server)!r})"
    env = {**os.environ, "WANDB_MODE": "online"}
    result = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "TrackerError: W&B could not start in online mode" in result.stderr, result.stderr[-2000:]
    assert state() == before


def test_a_run_whose_tracker_cannot_start_leaves_no_folder(no_server, small_photo_folder, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [
        "data=folder", f"data.root={small_photo_folder}", "data.image_size=32", "data.num_workers=0", "generator.ngf=8",
        "discriminator.ndf=8", "trainer.max_steps=1", "trainer.progress_bar=false", "logger=wandb", f"hydra.run.dir={run}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "gancolor", *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("gancolor: ")]
    assert len(lines) == 1 and "W&B could not start in online mode" in lines[0], result.stderr[-2000:]
    # Like a bad data folder: nothing left, so the same command can simply be run again.
    assert not run.exists(), sorted(p.name for p in run.iterdir())


# -- the other loggers ------------------------------------------------------------------------


def test_multilogger_forwards_everything_and_reports_the_run_id(tmp_path):
    calls = []

    class Recorder(Logger):
        run_id = "abc123"

        def log_validation_table(self, rows, step):
            calls.append(("table", len(rows), step))

        def log_summary(self, values):
            calls.append(("summary", values))

        def log_checkpoint(self, path, aliases=("latest",), metadata=None):
            calls.append(("checkpoint", Path(path).name, list(aliases)))

    jsonl = JsonlLogger(tmp_path / "metrics.jsonl")
    logger = MultiLogger([jsonl, Recorder()])
    assert logger.run_id == "abc123" and MultiLogger([jsonl]).run_id is None
    logger.log_validation_table([{"psnr": 1.0}], step=3)
    logger.log_summary({"best/val/psnr": 2.0})
    logger.log_checkpoint(tmp_path / "last.pt", ["latest"])
    logger.log_metrics({"val/psnr": 2.0}, step=3)
    logger.finish()
    assert calls == [("table", 1, 3), ("summary", {"best/val/psnr": 2.0}), ("checkpoint", "last.pt", ["latest"])]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "val/psnr": 2.0}


def test_images_for_the_table_become_hwc_uint8():
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0
    out = to_uint8_image(chw)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out[..., 0].min() == 255 and out[..., 1].max() == 0
    hwc = np.full((4, 5, 3), 7, np.uint8)
    assert to_uint8_image(hwc) is hwc or (to_uint8_image(hwc) == hwc).all()
    assert to_uint8_image(np.full((1, 4, 5), 2.0)).shape == (4, 5)  # clipped, single channel
    assert to_uint8_image(torch.zeros(3, 8, 3)).shape == (8, 3, 3)  # a tensor is always CHW


# -- the real trainer into W&B ----------------------------------------------------------------

TINY = [
    "data.image_size=32", "data.batch_size=3", "data.repeats=1", "generator.ngf=8", "discriminator.ndf=8",
    "trainer.max_epochs=2", "trainer.pretrain_epochs=1", "trainer.log_every_n_steps=1",
    "trainer.num_samples=2", "trainer.progress_bar=false", "trainer.device=cpu",
]


def test_a_training_run_logs_losses_metrics_and_samples_to_offline_wandb(offline, tmp_path):
    from omegaconf import OmegaConf

    from gancolor.build import build, build_recipe
    from gancolor.train import build_logger

    cfg = compose(*TINY, f"data.cache_dir={tmp_path / 'photos'}", "logger=wandb")
    trainer, data, recipe = build(cfg.trainer, "trainer"), build(cfg.data, "data"), build_recipe(cfg)
    data.setup()
    config = OmegaConf.to_container(cfg, resolve=True)
    offline.mkdir()
    logger = build_logger(cfg, offline, config)
    try:
        trainer.fit(recipe, data, offline, logger, config)
    finally:
        logger.finish()

    run = read_offline_run(offline)
    keys = run.keys()
    assert {"train/G/pixel", "train/G/loss", "train/D/loss", "train/D/out_real", "lr/G", "lr/D", "train/images_per_sec"} <= keys
    assert {"val/psnr", "val/ssim", "val/mae", "val/mse", "val/colorfulness_ratio", "val/samples", "epoch", "phase"} <= keys
    assert run.config["generator"]["ngf"] == 8 and run.config["logger"]["monitor"] == "val/psnr"
    val_psnr = [row["val/psnr"] for row in run.history.values() if "val/psnr" in row]
    assert len(val_psnr) == 2 and run.summary["best/val/psnr"] == max(val_psnr)
    jsonl = [json.loads(line) for line in (offline / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/psnr"] for r in jsonl if "val/psnr" in r] == pytest.approx(val_psnr)
