"""Several processes, one run: torchrun's environment, the process group, and the
few collective operations the trainer needs.

`torchrun --nproc_per_node=N -m gancolor trainer=ddp` starts N copies of the
program; torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous
address) in each. Rank 0 alone writes the run folder, logs and talks to W&B.
"""

from __future__ import annotations

import os
from datetime import datetime

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group() -> None:
    """Join the group torchrun set up (NCCL on GPUs, gloo on CPUs); idempotent."""
    if dist.is_initialized() or not launched_by_torchrun():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on at least one (e.g. a stop signal that
    reached the ranks at different steps): all ranks must stop at the same step."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_object(obj):
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shared_run_time() -> str:
    """One timestamp for the run folder name, chosen by rank 0: ranks started a second
    apart must not create two folders."""
    now = [datetime.now().strftime("%Y-%m-%d_%H-%M-%S")]
    if active():
        dist.broadcast_object_list(now, src=0)
    return now[0]


def shutdown() -> None:
    """Leave the process group before the interpreter exits: a gloo group torn down by
    interpreter shutdown can abort the process ("terminate called without an active
    exception") even though training finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
