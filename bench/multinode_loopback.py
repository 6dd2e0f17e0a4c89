"""Two nodes on one machine: the multi-node path (torchrun's c10d rendezvous, gloo) must
end with the weights that one node with two processes ends with.

    python bench/multinode_loopback.py            # ~1 minute on 2 CPU cores

Runs a tiny pix2pix (32 px, 2 epochs) three ways, as users launch it:
  A  torchrun --standalone --nproc_per_node=2 -m gancolor trainer=ddp ...
  B  torchrun --nnodes=2 --node_rank=0|1 --nproc_per_node=1 --rdzv_backend=c10d
             --rdzv_endpoint=127.0.0.1:PORT -m gancolor trainer=ddp ...   (two agents, started together)
and compares every tensor of A's and B's checkpoints/last.pt, with the time each took.
tests/test_ddp.py checks the same equality inside the suite, against a one-node run that
was stopped by SIGTERM and resumed. Exit code 0 when the weights agree, 1 otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = [
    "trainer=ddp", "data.image_size=32", "data.batch_size=2", "data.repeats=3", "generator.ngf=8",
    "discriminator.ndf=8", "trainer.max_epochs=2", "trainer.pretrain_epochs=1", "trainer.progress_bar=false",
    "trainer.num_samples=1", "logger=none",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(torchrun_args: list[str], run_dir: Path, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "-m", "gancolor", *TINY, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, name: str) -> None:
    output, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        sys.exit(f"{name} failed (exit {process.returncode}):\n{output[-3000:]}")


def main() -> int:
    from gancolor.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "GANCOLOR_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        finish(launch(["--standalone", "--nproc_per_node=2"], tmp / "one_node", env), "1 node x 2 processes")
        one_node_s = time.perf_counter() - start

        port, start = free_port(), time.perf_counter()
        nodes = [
            launch(["--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1", "--rdzv_backend=c10d",
                    f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=loopback"], tmp / "two_nodes", env)
            for rank in (0, 1)
        ]
        for rank, node in enumerate(nodes):
            finish(node, f"node {rank} of 2")
        two_nodes_s = time.perf_counter() - start

        a = load_checkpoint(tmp / "one_node" / "checkpoints" / "last.pt")
        b = load_checkpoint(tmp / "two_nodes" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] and a["nets"].keys() == b["nets"].keys()
    worst = max((a["nets"][k].double() - b["nets"][k].double()).abs().max().item() for k in a["nets"]
                if a["nets"][k].is_floating_point())
    identical = all(a["nets"][k].equal(b["nets"][k]) for k in a["nets"])
    print(f"1 node x 2 processes: {one_node_s:.1f} s; 2 nodes x 1 process (c10d on 127.0.0.1): {two_nodes_s:.1f} s; "
          f"{a['global_step']} steps; {len(a['nets'])} tensors; identical: {identical}; largest difference {worst:.3g}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
