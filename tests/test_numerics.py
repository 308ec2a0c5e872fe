"""Portable numerics: the same weights on any x86-64 CPU (ISA caps) and at any thread count."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emopipe import numerics

# Trains the tiny config's model (the batch-norm cnn) for two epochs on a seeded random set
# and prints a hash of the weights; run in a fresh process so each environment is its own.
TRAIN = """
import hashlib, sys, torch
import emopipe
from emopipe.modeling.checkpoint import input_spec
from emopipe.data.store import TensorSet
from emopipe.modeling.models import build
from emopipe.runtime import configure_threads, seed_everything, select_runtime
from emopipe.engine.fit import FitConfig, fit
configure_threads()
seed_everything(0)
g = torch.Generator().manual_seed(0)
data = TensorSet(torch.randint(0, 256, (48, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.arange(48) % 6, list("abcdef"), [f"{i}.png" for i in range(48)])
model = fit(build("cnn", 6, 3, batch_norm=True), data, None, input_spec(32, 3), FitConfig(2, 16, 1e-3, augment="basic"),
            select_runtime("fp32"), progress=False).model
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest())
"""
AVX512 = "avx512f" in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")


def weights_hash(threads: int, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (*numerics.PORTABLE_ENV, numerics.MODE_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", TRAIN], env=clean | env | {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# The weights' hash as first computed on an AMD EPYC (AVX2 only, 2 cores): on another CPU (Intel,
# AVX-512) a mismatch means portable mode is not portable there.
RECORDED = "9872245d4fafab98b8b731dc21ae6cff571e6a15d92bf0c32d10e62072bab861"


def test_portable_mode_gives_the_same_weights_under_any_isa_cap_and_thread_count():
    assert weights_hash(2) == RECORDED
    assert weights_hash(1, ONEDNN_MAX_CPU_ISA="AVX2", MKL_CBWR="AVX2", ATEN_CPU_CAPABILITY="avx2") == RECORDED
    assert weights_hash(3, ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX", ATEN_CPU_CAPABILITY="avx512") == RECORDED
    assert weights_hash(5) == RECORDED


@pytest.mark.skipif(not AVX512, reason="needs an AVX-512 CPU to show what the pin prevents")
def test_native_mode_depends_on_the_isa():
    """Without the pin, AVX-512 and AVX2 kernels give other weights: the pin is what makes runs portable."""
    assert weights_hash(2, EMOPIPE_NUMERICS="native", ATEN_CPU_CAPABILITY="avx512") != \
        weights_hash(2, EMOPIPE_NUMERICS="native", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")


def test_a_precision_that_needs_native_numerics_is_refused_in_process():
    with pytest.raises(RuntimeError, match="needs native numerics"):
        numerics.require("auto")
    numerics.require("fp32")  # the mode this process runs in: nothing to do


def test_portable_description_names_the_pins_but_not_the_thread_count():
    info = numerics.describe("cpu", "fp32", threads=2)
    assert info["mode"] == "portable" and info["isa"] == "AVX2" and info["onednn"] is False
    assert info["mkl_cbwr"] == "COMPATIBLE" and info["gemm_threads"] == 2 and "threads" not in info
