"""The versions of the packages that shape the numbers, for metrics/train.json: a run under another
lock (requirements/) then shows it in `dvc metrics diff` and `dvc exp show`."""
from __future__ import annotations

from importlib import metadata

# Training and its kernels, the split's arrays and tables, the decoded pixels, the metrics.
SHAPING_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "pillow")


def package_versions(names: tuple[str, ...] = SHAPING_PACKAGES) -> dict[str, str]:
    """{package: installed version}, "missing" for one that is not installed."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"
    return {name: version(name) for name in names}
