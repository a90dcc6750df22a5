"""Training on several processes with the PyTorch engine: DistributedDataParallel under
`torchrun` (one process per GPU, or per CPU share with gloo; any number of machines).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and where to meet: MASTER_ADDR, MASTER_PORT);
World.from_env() reads them, and World.init() joins the process group: NCCL where the engine
runs on CUDA, gloo on the CPU. The training loop hands every process the same global batch
(`batch_size` is the global batch) and each computes its contiguous share of it
(nnc.engines.torch.TorchEngine.train_step); rank 0 alone writes the run's files and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from nnc.lang.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World | None":
        """The processes torchrun started (None: a single process, as without torchrun)."""
        try:
            size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
        if size <= 1:
            return None
        if not 0 <= rank < size:
            raise UserError(f"RANK {rank} is outside WORLD_SIZE {size}")
        return cls(rank, size, local)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def init(self, device_type: str) -> None:
        """Join the process group (once): NCCL for CUDA, gloo for the CPU."""
        if dist.is_initialized():
            return
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the {backend} process group of {self.size} processes: {e}",
                            help="start the processes with torchrun (it sets MASTER_ADDR, MASTER_PORT, RANK, "
                                 "WORLD_SIZE)") from None

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone()
        dist.all_reduce(t)
        return t

    def gather_batch(self, z: torch.Tensor, n: int) -> torch.Tensor:
        """The global batch's rows, from each process's contiguous share (array_split order)."""
        sizes = [len(part) for part in np.array_split(np.arange(n), self.size)]
        pad = max(sizes)
        if len(z) < pad:
            z = torch.cat([z, z.new_zeros((pad - len(z),) + tuple(z.shape[1:]))])
        parts = [torch.empty_like(z) for _ in range(self.size)]
        dist.all_gather(parts, z.contiguous())
        return torch.cat([p[:k] for p, k in zip(parts, sizes)])

    def barrier(self) -> None:
        dist.barrier()

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
