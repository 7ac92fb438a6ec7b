"""The fake Hub answers huggingface_hub's real client the way huggingface.co does."""
from __future__ import annotations

import pytest

from tests._fixtures.hub_server import FakeHub

BIG = 96 * 1024  # 24 MiB: larger than huggingface_hub's 10 MB download chunk, so a cut leaves a partial file


@pytest.fixture
def hub(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models" / "org" / "model"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"a": 1}')
    (repo / "big.bin").write_bytes(bytes(range(256)) * BIG)
    with FakeHub(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        yield server


def test_download_and_resume(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    path = hf_hub_download("org/model", "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    assert open(path).read() == '{"a": 1}'
    hub.cut_after["big.bin"] = 15 << 20
    path = hf_hub_download("org/model", "big.bin", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    assert open(path, "rb").read() == bytes(range(256)) * BIG
    ranges = [r for method, p, r in hub.requests if p.endswith("big.bin") and method == "GET" and r]
    assert ranges and ranges[0].startswith("bytes=") and not ranges[0].startswith("bytes=0-")
    assert hub.bytes_sent["big.bin"] < 2 * 256 * BIG  # the retry asked only for the rest
    files = HfApi(endpoint=hub.endpoint).list_repo_files("org/model")
    assert sorted(files) == ["big.bin", "config.json"]


def test_missing_repo_and_file(hub, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/model", "nope.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
