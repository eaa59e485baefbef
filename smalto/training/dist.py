"""Several training processes, the standard way: torchrun starts them, this joins them up.

    torchrun --standalone --nproc_per_node 2 -m smalto train --out runs/x ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process's environment; `setup` reads them
and joins the process group (NCCL on CUDA, gloo on CPU). A plain `smalto train` is world size 1
and touches nothing of torch.distributed. The model is wrapped in DistributedDataParallel by the
trainer; everything else a step needs from the other ranks is a sum (`all_sum`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from smalto.errors import SmaltoError

# A rank that waits longer than this for the others gives up with an error instead of hanging.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group

    @property
    def main(self) -> bool:
        """The one process that logs and writes checkpoints."""
        return self.rank == 0


def setup() -> Processes:
    """This process's place among those torchrun started (one process when run without it)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise SmaltoError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({e})") from None
    if world_size == 1:
        return Processes()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        if local_rank >= (gpus := torch.cuda.device_count()):
            raise SmaltoError(f"torchrun started more processes on this machine than it has GPUs ({gpus}): "
                              f"one process per GPU, --nproc_per_node {gpus}")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Processes(rank, world_size, local_rank, backend)


def teardown(processes: Processes, finished: bool = True) -> None:
    """Leave the process group; after a finished run, all processes leave together."""
    if processes.backend is not None and dist.is_initialized():
        if finished:
            # a rank that exits while another still has gloo work in flight can abort it at exit
            # (SIGABRT, "terminate called without an active exception"); after a failure a barrier
            # would only wait for the timeout
            dist.barrier()
        dist.destroy_process_group()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of `values` over all processes (itself with one process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values


# --- sharding (FSDP2): each process keeps 1/world_size of the weights and optimizer state

def shard(model: torch.nn.Module) -> None:
    """Shard every block and the rest of the model in place (torch.distributed.fsdp.fully_shard):
    a process gathers a block's weights only while it runs, which is what lets a model and its
    optimizer state larger than one device train on several."""
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """A sharded model's whole weights and optimizer state (by parameter name) on rank 0, empty
    dicts elsewhere. Every process must call it: it is a collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return (get_model_state_dict(model, options=_full_options()),
            get_optimizer_state_dict(model, optimizer, options=_full_options()))


def scatter_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole optimizer state (by parameter name, as every process read it) into a sharded one."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def by_name(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` keyed by parameter name instead of position (what `gather` gives)."""
    order = _order(model, optimizer)
    state = optimizer.state_dict()
    return {"state": {order[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}


def by_position(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """The inverse of `by_name`: a state keyed by parameter name, for `optimizer.load_state_dict`."""
    index = {name: i for i, name in enumerate(_order(model, optimizer))}
    return {"state": {index[name]: s for name, s in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def _order(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
