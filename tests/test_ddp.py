"""DDP through torchrun, two CPU processes (gloo), end to end: one run folder, a SIGTERM that
stops every rank at one step (said once), a resume that continues it, and the multi-node
path (two torchrun agents, c10d rendezvous on 127.0.0.1) ending with the same weights."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gancolor.checkpoint import load_checkpoint
from helpers import gancolor_env, one_error_line

pytestmark = pytest.mark.slow

TINY = [
    "trainer=ddp",
    "data.image_size=32",
    "data.batch_size=2",
    "data.repeats=3",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "trainer.max_epochs=2",
    "trainer.pretrain_epochs=1",
    "trainer.progress_bar=false",
    "trainer.num_samples=1",
    "logger=none",
    "model.ema_decay=0.9",  # the generator's average is of the plain net, on every rank alike
    "data.num_workers=1",  # loader processes in each rank's process group, as a real run has
]


def torchrun(args: list[str], cwd: Path, cache: Path, preempt: bool = False) -> subprocess.CompletedProcess:
    """torchrun with 2 processes; `preempt`: SIGTERM to both workers' process groups
    (each rank and its DataLoader processes), as torchrun passes on a cluster's SIGTERM,
    once the run has logged a step."""
    env = {**gancolor_env(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gancolor", *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while preempt and not any(p.stat().st_size for p in cwd.glob("runs/pix2pix/*/metrics.jsonl")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    if preempt:
        workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, workers
        for pid in workers:
            os.killpg(os.getpgid(int(pid)), signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def two_nodes(args: list[str], cwd: Path, cache: Path) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents of one process each, as two machines would start them
    (c10d rendezvous), here both on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**gancolor_env(cache), "OMP_NUM_THREADS": "1"}
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=loopback", "-m", "gancolor", *args]
        for rank in (0, 1)
    ]  # fmt: skip
    logs = [(cwd / f"node{rank}.out", cwd / f"node{rank}.err") for rank in (0, 1)]
    nodes = []
    try:
        for command, (out, err) in zip(commands, logs):
            with out.open("w") as stdout, err.open("w") as stderr:
                nodes.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True))
        for node in nodes:
            node.wait(timeout=300)
    finally:  # one agent failing leaves the other waiting in the rendezvous: end both
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    return [subprocess.CompletedProcess(c, n.returncode, out.read_text(), err.read_text()) for c, n, (out, err) in zip(commands, nodes, logs)]


def test_two_processes_stop_together_resume_exactly_and_end_as_two_nodes_do(tmp_path):
    cache = tmp_path / "cache"
    stopped = torchrun([*TINY, "trainer.log_every_n_steps=1"], tmp_path, cache, preempt=True)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    output = stopped.stdout + stopped.stderr
    assert output.count("SIGTERM received") == 1 and stopped.stderr.count("gancolor: stopped by SIGTERM") == 1, output
    runs = list((tmp_path / "runs" / "pix2pix").iterdir())
    assert len(runs) == 1, "both ranks write into one run folder"
    run = runs[0]
    assert f"resume with: torchrun --nproc_per_node=2 -m gancolor resume={run}" in stopped.stderr, "the command that can continue it"
    assert "2 processes, effective batch 4" in (run / "train.log").read_text()
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert len(ckpt["rng"]) == 2, "the RNG state of each rank is saved"
    assert all(not k.split(".")[1] == "module" for k in ckpt["nets"]), "checkpoints hold the plain nets"
    assert ckpt["ema"]["generator"].keys() == {k.removeprefix("generator.") for k in ckpt["nets"] if k.startswith("generator.")}

    # One process cannot continue two processes' shards and RNGs: refused, nothing written.
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    alone = subprocess.run([sys.executable, "-m", "gancolor", f"resume={run}"],
                           cwd=tmp_path, env=gancolor_env(cache), capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2
    assert "trained by 2 process(es) and this command starts 1" in one_error_line(alone)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    resumed = torchrun([f"resume={run}"], tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list((tmp_path / "runs" / "pix2pix").iterdir())) == 1
    # 6 training photos x 3 repeats = 18 samples an epoch, 9 per rank, 4 batches of 2
    # per rank (the ragged one dropped): README's formula for the steps of an epoch.
    steps_per_epoch = (18 // 2) // 2
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 2 * steps_per_epoch and ckpt["epoch"] == 2
    assert (run / "train.log").read_text().count("all 2 ranks hold identical weights") == 1

    # Two machines of one process each: the same run, stop and resume aside, to the last bit.
    nodes = two_nodes([*TINY, "trainer.log_every_n_steps=1", f"hydra.run.dir={tmp_path / 'two_nodes'}"], tmp_path, cache)
    assert [n.returncode for n in nodes] == [0, 0], nodes[0].stderr[-3000:] + nodes[1].stderr[-3000:]
    other = load_checkpoint(tmp_path / "two_nodes" / "checkpoints" / "last.pt")
    assert other["global_step"] == ckpt["global_step"] and other["nets"].keys() == ckpt["nets"].keys()
    for key, value in ckpt["nets"].items():
        assert torch.equal(value, other["nets"][key]), key


def gancolor_lines(result: subprocess.CompletedProcess) -> list[str]:
    """gancolor's own lines on stderr (torchrun adds its ChildFailedError report)."""
    return [line for line in result.stderr.splitlines() if line.startswith("gancolor: ")]


def test_the_resume_command_starts_as_many_processes_as_the_run_had(monkeypatch):
    from gancolor.distributed import resume_command

    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert resume_command("runs/a") == "python -m gancolor resume=runs/a"
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun --nproc_per_node=4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    assert resume_command("runs/a") == "torchrun --nproc_per_node=4 -m gancolor resume=runs/a"
    monkeypatch.setenv("WORLD_SIZE", "16")  # torchrun --nnodes=2 --nproc_per_node=8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    assert resume_command("runs/a") == (
        "the same torchrun command on each of the 2 machines (--nnodes=2 --nproc_per_node=8, your rendezvous options) "
        "with -m gancolor resume=runs/a")
