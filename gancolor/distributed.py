"""Several processes, one run: torchrun's environment, the process group, the few
collective operations the trainer needs, and the recipe's nets in their DDP wrappers.

`torchrun --nproc_per_node=N -m gancolor trainer=ddp` starts N copies of the
program; torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous
address) in each. Rank 0 alone writes the run folder, logs and talks to W&B.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer that asks for them


# torch.compile's per-function budget of graph variants (torch's default); dynamo falls
# back to eager, with one warning, for a function past it.
RECOMPILES_PER_NET = 8


def allow_recompiles_per_net(nets: Iterable[Iterable[nn.Module]]) -> None:
    """Give each compiled net torch's budget of graph variants. Dynamo caches graphs per
    Python function, not per module, so nets of one class share one budget: CycleGAN's two
    generators (1- and 3-channel inputs, inputs that do or do not require grad, train and
    eval, a smaller last batch) used up 8 within one epoch and ran eager from then on.
    `nets`: per net, the modules whose forward dynamo may trace (a DDP wrapper and its net)."""
    import torch._dynamo

    per_function: dict[object, int] = {}
    for modules in nets:
        for code in {type(m).forward.__code__ for m in modules}:
            per_function[code] = per_function.get(code, 0) + 1
    config = torch._dynamo.config
    key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    needed = RECOMPILES_PER_NET * max(per_function.values(), default=1)
    if getattr(config, key) < needed:
        setattr(config, key, needed)


def forward_buffer_sync(enabled: bool) -> dict[str, bool]:
    """DDP's argument for copying rank 0's buffers before each forward: forward_sync_buffers
    where torch has it (broadcast_buffers is deprecated there), else broadcast_buffers."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    key = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters else "broadcast_buffers"
    return {key: enabled}


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resume_command(run_dir) -> str:
    """The command that continues this run: a resume must start as many processes as
    trained it, so under torchrun it is torchrun's command (several machines: in words)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return f"python -m gancolor resume={run_dir}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if per_node >= world:
        return f"torchrun --nproc_per_node={world} -m gancolor resume={run_dir}"
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", world // per_node))
    return (f"the same torchrun command on each of the {nodes} machines (--nnodes={nodes} --nproc_per_node={per_node}, "
            f"your rendezvous options) with -m gancolor resume={run_dir}")


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


# -- the recipe's nets under DDP ------------------------------------------------------------


@contextlib.contextmanager
def frozen(recipe: nn.Module, names: Iterable[str]):
    """Hold the named nets fixed: gradients still flow *through* them to the nets
    being trained, but none accumulate in their parameters (the G step against D)."""
    params = [p for name in names for p in getattr(recipe, name).parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class WrappedNets:
    """The DistributedDataParallel wrappers of one recipe's trainable nets.

    The recipe keeps calling self.generator(...); `wrap` swaps the attribute for its
    wrapper. Checkpoints, validation and frozen steps see the plain nets (`unwrapped`).
    Without `wrap` (one process) every method here leaves the recipe as it is.
    """

    def __init__(self, recipe: nn.Module) -> None:
        self.recipe = recipe
        self.wrappers: dict[str, nn.Module] = {}

    def wrap(self, device: torch.device, sync_batchnorm: bool, find_unused_parameters: bool) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP only ever synchronises the parameters that required grad when it was built,
        # so build it with everything trainable and freeze again afterwards.
        flags = {p: p.requires_grad for p in self.recipe.parameters()}
        self.recipe.requires_grad_(True)
        try:
            for name, net in list(self.recipe.named_children()):
                if not any(True for _ in net.parameters()):
                    continue
                if sync_batchnorm:
                    net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                ids = [device.index] if device.type == "cuda" else None
                self.wrappers[name] = DDP(
                    net, device_ids=ids, find_unused_parameters=find_unused_parameters,
                    # Gradients live in the communication buckets: no copy in, none out.
                    gradient_as_bucket_view=True,
                    # Only nets with buffers (BatchNorm running statistics) need rank 0's
                    # copied to the others before each forward; the rest skip a broadcast.
                    **forward_buffer_sync(any(True for _ in net.buffers())),
                )
                setattr(self.recipe, name, self.wrappers[name])
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)

    def compile(self, mode: str, eager: Iterable[str] = ()) -> None:
        """torch.compile, in place, every trainable net but the `eager` ones: the DDP
        wrappers once `wrap` made them (dynamo then splits the graph at DDP's buckets, so
        gradients are all-reduced while the backward pass goes on), else the nets.
        In place, parameter names, checkpoints and freezing by attribute are unchanged."""
        names = [n for n, net in self.recipe.named_children() if n not in eager and any(True for _ in net.parameters())]
        allow_recompiles_per_net((getattr(self.recipe, name), self.plain(name)) for name in names)
        for name in names:
            getattr(self.recipe, name).compile(mode=mode)

    def plain(self, name: str) -> nn.Module:
        """The recipe's net `name` itself, out of its DDP wrapper if it has one."""
        return self.wrappers[name].module if name in self.wrappers else getattr(self.recipe, name)

    @contextlib.contextmanager
    def unwrapped(self, names: Iterable[str] | None = None):
        """The plain nets in place of their DDP wrappers, for the duration."""
        names = [n for n in (self.wrappers if names is None else names) if n in self.wrappers]
        for name in names:
            setattr(self.recipe, name, self.wrappers[name].module)
        try:
            yield
        finally:
            for name in names:
                setattr(self.recipe, name, self.wrappers[name])

    @contextlib.contextmanager
    def holding(self, names: Iterable[str]):
        """Freeze the named nets for one step. Under DDP they are also called unwrapped:
        a wrapped net that gets no gradients would leave DDP waiting for them."""
        names = tuple(names)
        with self.unwrapped(names), frozen(self.recipe, names):
            yield

    def assert_ranks_agree(self) -> None:
        """Every rank must end with the same weights; say so in the log, or fail."""
        with self.unwrapped():
            checksum = float(sum(p.detach().double().sum() for p in self.recipe.parameters()))
        sums = all_gather_object(checksum)
        if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"DDP ranks disagree on the weights: checksums {sums}")
        log.info("all %d ranks hold identical weights (checksum %.10g)", len(sums), checksum)
