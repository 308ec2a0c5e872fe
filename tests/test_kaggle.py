from pathlib import Path

import kagglehub
import pytest
import requests

from emopipe.data.kaggle import SourceError, download

OWNER, NAME = "someone", "faces"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty kagglehub cache; credentials hidden and every HTTP request fails at once."""
    root = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(root))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE", "TBE_RUNTIME_ADDR"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def requests_made(monkeypatch) -> list[str]:
    made = []

    def offline(session, request, **kwargs):
        made.append(request.url)
        raise requests.ConnectionError(f"offline test: {request.url}")

    monkeypatch.setattr(requests.Session, "send", offline)
    return made


def _populate(cache: Path, version: int, *, complete: bool = True) -> Path:
    """Lay out a downloaded version exactly as kagglehub does."""
    folder = cache / "datasets" / OWNER / NAME / "versions" / str(version)
    (folder / "train" / "happy").mkdir(parents=True)
    (folder / "train" / "happy" / "a.jpg").write_bytes(b"jpg")
    (folder / "labels.csv").write_text("x\n")
    if complete:
        (cache / "datasets" / OWNER / NAME / f"{version}.complete").touch()
    return folder


def test_pinned_cached_version_needs_no_network(cache, requests_made):
    folder = _populate(cache, 3)
    assert download(f"{OWNER}/{NAME}/versions/3") == folder
    assert download(f"{OWNER}/{NAME}/versions/3", sub_path="train") == folder / "train"
    assert requests_made == []


def test_unpinned_offline_falls_back_to_newest_complete_version(cache, requests_made, capsys):
    _populate(cache, 2)
    newest = _populate(cache, 5)
    _populate(cache, 7, complete=False)  # an interrupted download must not be used
    assert download(f"{OWNER}/{NAME}") == newest
    assert len(requests_made) == 1  # kagglehub asked for the current version, then we fell back
    assert f"using newest cached version 5 of {OWNER}/{NAME}" in capsys.readouterr().err


def test_empty_cache_offline_says_what_to_do(cache, requests_made):
    for handle in (f"{OWNER}/{NAME}", f"{OWNER}/{NAME}/versions/1"):
        with pytest.raises(SourceError) as err:
            download(handle)
        message = str(err.value)
        assert "\n" not in message and "nothing cached" in message
        for hint in ("KAGGLEHUB_CACHE", "internet", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME/KAGGLE_KEY"):
            assert hint in message


def test_pinned_uncached_version_points_at_cached_ones(cache, requests_made):
    _populate(cache, 2)
    with pytest.raises(SourceError, match=rf"cached versions: 2 \(use {OWNER}/{NAME}/versions/2\)"):
        download(f"{OWNER}/{NAME}/versions/9")


def test_missing_sub_path_lists_what_is_there(cache, requests_made):
    _populate(cache, 1)
    with pytest.raises(SourceError, match=r"'train/sad' not found .*train contains: happy/"):
        download(f"{OWNER}/{NAME}/versions/1", sub_path="train/sad")
    with pytest.raises(SourceError, match=r"contains: labels.csv, train/"):
        download(f"{OWNER}/{NAME}/versions/1", sub_path="test")
    with pytest.raises(SourceError, match="relative path inside"):
        download(f"{OWNER}/{NAME}/versions/1", sub_path="../elsewhere")


def test_http_refusal_and_bad_handle(cache, monkeypatch):
    response = requests.Response()
    response.status_code = 403

    def refuse(*args, **kwargs):
        raise requests.HTTPError("403 Client Error", response=response)

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    with pytest.raises(SourceError, match=r"HTTP 403.*credentials"):
        download(f"{OWNER}/{NAME}")
    with pytest.raises(SourceError, match="invalid Kaggle dataset handle"):
        download("just-a-name")
