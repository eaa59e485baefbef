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
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Processes(rank, world_size, local_rank, backend)


def teardown(processes: Processes) -> None:
    if processes.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of `values` over all processes (itself with one process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values
