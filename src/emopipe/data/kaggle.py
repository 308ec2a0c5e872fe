"""The real Kaggle dataset via kagglehub, usable offline from a populated cache.

What kagglehub 1.0.3 does (read in its source: datasets.py, http_resolver.py, cache.py):

* Cache root is ``$KAGGLEHUB_CACHE`` (default ``~/.cache/kagglehub``). A dataset version
  lives in ``datasets/<owner>/<name>/versions/<N>/`` and only counts as cached when the
  marker file ``datasets/<owner>/<name>/<N>.complete`` exists too.
* Pinned handle ``owner/name/versions/N``: if cached, the path is returned without any
  network request (no credentials needed). If not cached it downloads.
* Unpinned handle ``owner/name``: it always asks the API for the current version first,
  so offline it raises ``requests.ConnectionError`` even when versions are cached.
  Its HTTP session sets no timeout, so a network that drops packets (rather than
  failing DNS/connect) can stall for the OS's TCP timeout.
* Public datasets download without credentials; kagglehub reads ``KAGGLE_API_TOKEN``,
  ``~/.kaggle/access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``~/.kaggle/kaggle.json``.

Our policy: call kagglehub; if an *unpinned* handle fails with any HTTP/network error,
use the newest complete cached version and say so on stderr (a pinned handle never
falls back: it asked for exactly that version). Pin the handle
(``owner/name/versions/N``) for reproducible, network-free runs. The whole dataset is
fetched and ``sub_path`` is resolved locally, so a cached bundle serves any sub-folder.
This module never reads or writes credentials itself.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import kagglehub
import requests
from kagglehub.config import get_cache_folder
from kagglehub.handle import DatasetHandle, parse_dataset_handle

from emopipe.errors import SourceError

_LISTED_ENTRIES = 20


def download(handle: str, *, sub_path: str | None = None) -> Path:
    """Local folder of Kaggle dataset ``handle`` (joined with ``sub_path`` if given)."""
    try:
        parsed = parse_dataset_handle(handle)
    except ValueError:
        msg = f"invalid Kaggle dataset handle {handle!r}: use owner/name or owner/name/versions/N"
        raise SourceError(msg) from None

    try:
        root = Path(kagglehub.dataset_download(handle))
    except requests.RequestException as err:
        root = None if parsed.is_versioned() else _newest_cached(parsed)
        if root is None:
            raise SourceError(_failure_message(handle, parsed, err)) from None
        print(
            f"kaggle: request failed ({type(err).__name__}); using newest cached version {root.name}"
            f" of {handle} at {root} (pin it as {handle}/versions/{root.name})",
            file=sys.stderr,
        )
    return _resolve_sub_path(root, sub_path) if sub_path else root


def _cached_versions(h: DatasetHandle) -> list[int]:
    """Complete cached versions of ``h`` (kagglehub's layout and completion markers), ascending."""
    base = Path(get_cache_folder(), "datasets", h.owner, h.dataset)
    if not (base / "versions").is_dir():
        return []
    return sorted(
        int(d.name)
        for d in (base / "versions").iterdir()
        if d.name.isdigit() and d.is_dir() and (base / f"{d.name}.complete").is_file()
    )


def _newest_cached(h: DatasetHandle) -> Path | None:
    versions = _cached_versions(h)
    return Path(get_cache_folder(), "datasets", h.owner, h.dataset, "versions", str(versions[-1])) if versions else None


def _failure_message(handle: str, h: DatasetHandle, err: requests.RequestException) -> str:
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else "?"
        return (
            f"Kaggle refused {handle!r} (HTTP {status}): check the handle, accept the dataset's terms on kaggle.com"
            " and put credentials in ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY"
        )
    cached = _cached_versions(h)
    available = (
        f"cached versions: {', '.join(map(str, cached))} (use {h.owner}/{h.dataset}/versions/{cached[-1]})"
        if cached
        else "nothing cached for it"
    )
    return (
        f"cannot download Kaggle dataset {handle!r} ({type(err).__name__}) and {available} in {get_cache_folder()}:"
        " set KAGGLEHUB_CACHE to a populated kagglehub cache, or connect to the internet"
        " (private/gated datasets also need credentials in ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)"
    )


def _resolve_sub_path(root: Path, sub_path: str) -> Path:
    relative = PurePosixPath(sub_path)
    if relative.is_absolute() or ".." in relative.parts:
        raise SourceError(f"sub_path {sub_path!r} must be a relative path inside the dataset")
    target = root.joinpath(*relative.parts)
    if target.exists():
        return target
    parent = target.parent
    while not parent.is_dir():
        parent = parent.parent
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in parent.iterdir())
    listing = ", ".join(entries[:_LISTED_ENTRIES]) + (", ..." if len(entries) > _LISTED_ENTRIES else "")
    raise SourceError(f"sub_path {sub_path!r} not found in {root}; {parent} contains: {listing or '(nothing)'}")
