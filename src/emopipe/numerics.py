"""Which CPU kernels compute the numbers: pinned by default, so results do not follow the CPU's extras.

Float results depend on the kernels that run, and four libraries pick theirs per machine:
PyTorch's own kernels by CPU capability (AVX2 vs AVX-512 reductions sum in another order),
oneDNN by ISA (its convolution backward also splits reductions by thread count), NNPACK by
cache size (its convolution blocks input channels by the L1 cache), and MKL's GEMM by ISA, by
CPU vendor and by thread count. *Portable* mode, the default, pins them before torch loads —
`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`, `MKL_CBWR=COMPATIBLE` (MKL's one branch
that is the same on Intel and AMD: `AVX2` falls back to the machine's own code on AMD) on a
fixed two threads per GEMM (`fix_gemm_threads`) — and switches oneDNN and NNPACK off, so
convolutions run as im2col + MKL GEMM. The same params and seed then give the same bits under
any ISA cap and at any thread count (checked with 1, 2, 3 and 5 threads), slower than the
machine's best kernels. Two CPU models are known to differ still (docs/reproducibility.md,
"Across machines").

*Native* mode (`EMOPIPE_NUMERICS=native`) leaves every library its best kernels: faster
(fp32 training ~1.7× on one AVX-512 thread), and what `train.precision: auto | bf16 | fp16`
needs (bf16 is fast only with AMX/AVX-512 BF16); not bit-reproducible across CPUs or thread
counts. Stages switch to it by themselves when the params ask for a precision other than
fp32 (`require`); fp32 runs native only when the environment asks for it (the opt-in fast
seed grid, `make ablation NUMERICS=native`).
GPU results are never bit-identical across GPU models or driver versions.

This module must not import torch: `emopipe/__init__.py` calls `pin_environment()` before
anything else of the package, and so before torch is imported.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

MODE_VARIABLE = "EMOPIPE_NUMERICS"
relaunch_allowed = False  # set by the stage runner (cli.run): only a stage script may replace its process
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
GEMM_THREADS = 2  # MKL threads per GEMM in portable mode (fixed: CNR needs it; 2 = the smallest machine's cores)


def mode() -> str:
    """'portable' (default) or 'native'."""
    return "native" if os.environ.get(MODE_VARIABLE, "portable") == "native" else "portable"


def pin_environment() -> None:
    """In portable mode, set the ISA caps; they must be in place before torch first computes."""
    if mode() == "portable":
        os.environ.update(PORTABLE_ENV)


def mode_for(precision: str) -> str:
    """The mode a stage needs: native for bf16/fp16/auto; fp32 keeps the mode chosen (portable by default)."""
    return mode() if precision == "fp32" else "native"


def require(precision: str) -> None:
    """Make this stage process run in the numerics mode `precision` needs.

    The caps are read once per process, so a stage script in the wrong mode replaces itself
    (`exec`) with the same command in the right one. In-process callers (tests, notebooks)
    get an error instead: they choose the mode with EMOPIPE_NUMERICS before importing emopipe.
    """
    wanted = mode_for(precision)
    if mode() == wanted:
        return
    if not relaunch_allowed:
        raise RuntimeError(
            f"train.precision={precision!r} needs {wanted} numerics, but this process runs {mode()} numerics: "
            f"set {MODE_VARIABLE}={wanted} before importing emopipe"
        )
    env = {k: v for k, v in os.environ.items() if wanted == "portable" or k not in PORTABLE_ENV}
    env[MODE_VARIABLE] = wanted
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def configure_torch() -> None:
    """Torch-side switches of the mode: oneDNN off in portable mode, deterministic algorithms always."""
    import torch

    torch.backends.mkldnn.enabled = mode() == "native"
    torch.backends.nnpack.set_flags(mode() == "native")
    # = torch.use_deterministic_algorithms(True, warn_only=True) minus its import of torch._inductor.config
    # (~1.4 s in every stage process, for a flag of torch.compile, which the project does not use)
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    if mode() == "portable" and torch.backends.cpu.get_cpu_capability() not in ("AVX2", "DEFAULT"):
        raise RuntimeError("torch computed before emopipe pinned the CPU numerics: import emopipe before torch")


def fix_gemm_threads() -> None:
    """In portable mode, MKL runs every GEMM on GEMM_THREADS threads, whatever torch's count.

    MKL's reproducibility (CNR) holds for a fixed thread count, and the COMPATIBLE branch splits
    a GEMM's sums by that count (3 threads give other bits than 2). Call after `torch.set_num_threads`,
    which sets MKL's count too.
    """
    import torch

    if mode() != "portable" or not torch.backends.mkl.is_available():
        return
    torch.get_num_threads()  # torch's lazy per-thread set-up sets MKL's count: let it run first
    libtorch = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    libtorch.mkl_set_num_threads_local(ctypes.byref(ctypes.c_int(GEMM_THREADS)))  # Fortran-style symbol: by reference


def describe(device: str, precision: str, threads: int) -> dict:
    """The numeric environment for metrics/train.json, so `dvc metrics diff` shows why two runs differ.

    The thread count is listed only in native mode: portable results do not depend on it, and
    recording it would make the metrics file (and its hash in dvc.lock) differ between machines.
    """
    import torch

    info = {
        "mode": mode(),
        "device": device,
        "precision": precision,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "onednn": bool(torch.backends.mkldnn.enabled),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "default"),
        **({"gemm_threads": GEMM_THREADS} if mode() == "portable" else {}),
        "torch": torch.__version__,
    }
    return info | ({"threads": threads} if mode() == "native" else {})
