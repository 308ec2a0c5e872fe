"""Portable numerics: the same weights on any x86-64 CPU (ISA caps) and at any thread count."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emopipe import numerics

# Trains the tiny config's model (the batch-norm cnn) for two epochs on a seeded random set
# and prints a hash of the weights; run in a fresh process so each environment is its own.
# argv[1]: the repository's params.yaml (the train params the run changes from).
TRAIN = """
import dataclasses, hashlib, sys, torch
import emopipe
from emopipe.config import load_params
from emopipe.modeling.checkpoint import input_spec
from emopipe.data.store import TensorSet
from emopipe.modeling.models import build
from emopipe.runtime import configure_threads, seed_everything, select_runtime
from emopipe.engine.fit import fit
configure_threads()
seed_everything(0)
g = torch.Generator().manual_seed(0)
data = TensorSet(torch.randint(0, 256, (48, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.arange(48) % 6, list("abcdef"), [f"{i}.png" for i in range(48)])
train = load_params(sys.argv[1]).train  # every setting the recorded hash was made with, pinned:
t = dataclasses.replace(train, epochs=2, batch_size=16, lr=1e-3, weight_decay=1e-4, label_smoothing=0.05, class_weights=True,
                        weighted_sampler=False, augment="basic", loss="ce", focal_alpha={}, scheduler="none", early_stopping=0,
                        grad_clip=0.0, transfer=dataclasses.replace(train.transfer, freeze_epochs=0))
model = fit(build("cnn", 6, 3, batch_norm=True), data, None, input_spec(32, 3), t, 0, select_runtime("fp32"), progress=False).model
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest())
"""
REPO = Path(__file__).resolve().parents[1]
AVX512 = "avx512f" in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "")


def weights_hash(threads: int, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (*numerics.PORTABLE_ENV, numerics.MODE_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", TRAIN, str(REPO / "params.yaml")],
                          env=clean | env | {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# The weights' hash on each CPU where it was recorded. Portable mode makes it the same under every ISA
# cap and thread count of one machine; between these two CPU models it differs, for a cause not yet
# found (docs/reproducibility.md, "Across machines"). A hash outside this table is a new machine-dependent
# result: record it here only once the difference is understood.
RECORDED = {
    "9872245d4fafab98b8b731dc21ae6cff571e6a15d92bf0c32d10e62072bab861": "AMD EPYC, AVX2 only, 2 cores",
    "7d71ec6ce64f533c73a53ecae58bbfb41c74c32c7b019e450fdcd4f680eede68": "Intel Xeon, AVX-512 + AMX, 48 KB L1, 2 cores",
}


def test_portable_mode_gives_the_same_weights_under_any_isa_cap_and_thread_count():
    here = weights_hash(2)
    assert weights_hash(1, ONEDNN_MAX_CPU_ISA="AVX2", MKL_CBWR="AVX2", ATEN_CPU_CAPABILITY="avx2") == here
    assert weights_hash(3, ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX", ATEN_CPU_CAPABILITY="avx512") == here
    assert weights_hash(5) == here
    assert here in RECORDED, f"weights hash {here} was recorded on no known CPU"


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
    numerics.configure_torch()  # what importing emopipe.runtime does (oneDNN off in portable mode), whatever this worker imported
    info = numerics.describe("cpu", "fp32", threads=2)
    assert info["mode"] == "portable" and info["isa"] == "AVX2" and info["onednn"] is False
    assert info["mkl_cbwr"] == "COMPATIBLE" and info["gemm_threads"] == 2 and "threads" not in info
