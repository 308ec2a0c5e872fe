"""Runtime checks that need no GPU: DDP on CUDA needs one GPU per process."""
import subprocess

import pytest
import torch

from emopipe import runtime
from emopipe.errors import ParamError


@pytest.fixture
def launched(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime.subprocess, "run", lambda cmd, check: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    return calls


def gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_more_processes_than_gpus_stop_before_launching(monkeypatch, launched):
    gpus(monkeypatch, 1)
    with pytest.raises(ParamError) as err:
        runtime.torchrun(2, ["stages/train.py"])
    assert str(err.value) == ("train.processes=2 needs 2 CUDA GPUs, 1 visible; "
                              "set train.processes: 1 (or run on CPU with gloo: CUDA_VISIBLE_DEVICES=)")
    assert launched == []


@pytest.mark.parametrize("visible", [0, 2])  # CPU (gloo), or one GPU per process
def test_enough_gpus_or_cpu_launch_torchrun(monkeypatch, launched, visible):
    gpus(monkeypatch, visible)
    assert runtime.torchrun(2, ["stages/train.py"]) == 0
    assert launched and "--nproc-per-node=2" in launched[0]
