"""Device, precision, memory format and threads.

`precision: fp32` (the default) runs the pinned, bit-reproducible CPU kernels (numerics.py).
`precision: auto` is the fast path: bf16 autocast + channels_last where the hardware has
native bf16 (CUDA with bf16, or CPUs with AVX-512 BF16 / AMX), fp16 on older CUDA GPUs, fp32
with the machine's best kernels elsewhere (on a CPU without native bf16, e.g. AVX2 only, bf16
autocast is several times *slower*).
"""
from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from emopipe import numerics
from emopipe.errors import ParamError
from emopipe.machine import available_cores, cpu_has_native_bf16

numerics.configure_torch()


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16, whose small range flushes gradients to zero; bf16 and fp32 need none."""
        return torch.amp.GradScaler("cuda", enabled=self.dtype is torch.float16)


def select_runtime(precision: str = "auto", device: str | None = None) -> Runtime:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise ValueError("train.precision=fp16 needs a CUDA device; use auto, fp32 or bf16 on CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Runtime(dev, dtype, channels_last=dtype is not None or dev.type == "cuda")


def seed_everything(seed: int) -> None:
    """Same seed, same params → same bits on CPU (with the numerics of numerics.py)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(processes: int = 1) -> int:
    """Threads for this process: OMP_NUM_THREADS if set (e.g. by `dvc queue` workers sharing
    the machine), else the cores this process may run on (affinity aware) split between the
    `processes` ranks of a DDP run."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, available_cores() // processes))
    torch.set_num_threads(threads)
    numerics.fix_gemm_threads()
    return threads


def start(precision: str) -> Runtime:
    """A model stage's set-up: the numerics `precision` needs (a stage script may re-run itself in
    native mode), its threads, then the device and precision to run on."""
    numerics.require(precision)
    configure_threads()
    return select_runtime(precision)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on GPU)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(torch_dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str | None:
        return f"cuda:{self.local_rank}" if self.world_size > 1 and torch.cuda.is_available() else None

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        ids = [self.local_rank] if torch.cuda.is_available() else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of n samples."""
        per = -(-n // self.world_size)
        return slice(self.rank * per, min(n, (self.rank + 1) * per))

    def gather_epoch(self, loss_sum: float, preds: torch.Tensor, targets: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
        """Sum the loss and concatenate predictions over ranks, for one epoch's train metrics."""
        if self.world_size == 1:
            return loss_sum, preds.numpy(), targets.numpy()
        parts: list = [None] * self.world_size
        torch_dist.all_gather_object(parts, (loss_sum, preds, targets))
        return sum(p[0] for p in parts), torch.cat([p[1] for p in parts]).numpy(), torch.cat([p[2] for p in parts]).numpy()

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def check_gpus(processes: int) -> None:
    """On CUDA every DDP rank needs its own GPU: refuse before launching rather than fail inside NCCL."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if processes > 1 and visible and visible < processes:
        raise ParamError(f"train.processes={processes} needs {processes} CUDA GPUs, {visible} visible; "
                         "set train.processes: 1 (or run on CPU with gloo: CUDA_VISIBLE_DEVICES=)")


def torchrun(processes: int, argv: list[str]) -> int:
    """Run this script again under torchrun with `processes` ranks on this machine; its exit code."""
    check_gpus(processes)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *argv]
    return subprocess.run(cmd, check=False).returncode
