"""`convert` from a Hub repo id, against a local server that answers like huggingface.co: only the files
conversion needs are fetched, a revision is honoured, a cut download resumes, and the cache serves offline."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from quantkit.convert import convert
from quantkit.errors import FetchError
from quantkit.gguf.reader import open_gguf
from quantkit.hub import hub_settings, reachable
from tests._fixtures.hub_server import FakeHub
from reference.tiny import tiny_checkpoint

pytestmark = pytest.mark.slow
REPO = "deepseek-ai/Tiny-R1-Distill-Qwen"
WEIGHTS = "model.safetensors"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    source = tiny_checkpoint("qwen2")
    repo = tmp_path / "hub" / "models" / REPO
    repo.mkdir(parents=True)
    for f in source.iterdir():
        if not f.name.startswith("."):
            (repo / f.name).symlink_to(f)
    (repo / "pytorch_model.bin").write_bytes(b"pickle weights that must never be fetched")
    (repo / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def test_repo_id_download_resumes_and_is_reused_offline(hub, tmp_path, monkeypatch):
    source_weights = tiny_checkpoint("qwen2") / WEIGHTS
    size = source_weights.stat().st_size
    assert size > 30 << 20  # more than huggingface_hub's 10 MB chunks, so a cut leaves whole chunks to resume from
    hub.cut_after[WEIGHTS] = 25 << 20

    result = convert(REPO, tmp_path / "out", outtype="F16")

    assert result.name == "Tiny-R1-Distill-Qwen"
    assert result.base.path == tmp_path / "out" / "Tiny-R1-Distill-Qwen-F16.gguf"
    assert len(open_gguf(result.base.path).tensors) == 27
    assert _sha(result.source / WEIGHTS) == _sha(source_weights)
    assert str(result.source).startswith(str(tmp_path / "hf-cache"))
    ranges = [r for method, p, r in hub.requests if p.endswith(WEIGHTS) and method == "GET" and r]
    assert any(not r.startswith("bytes=0-") for r in ranges), ranges  # resumed, not restarted
    assert hub.bytes_sent[WEIGHTS] < 2 * size
    fetched = {Path(p).name for method, p, _ in hub.requests if "/resolve/" in p and method == "GET"}
    assert "pytorch_model.bin" not in fetched and "README.md" not in fetched

    # offline, with the server gone: the cache is enough
    hub.__exit__(None, None, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = convert(REPO, tmp_path / "out2", outtype="F16")
    assert again.source == result.source
    assert again.base.path.read_bytes() == result.base.path.read_bytes()

    # and without HF_HUB_OFFLINE: the silence is found out in one try (not huggingface_hub's ~23 s of retries)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not reachable() and hub_settings()["local_files_only"]
    third = convert(REPO, tmp_path / "out3", outtype="F16")
    assert third.base.path.read_bytes() == result.base.path.read_bytes()


def test_revision_is_honoured(hub, tmp_path):
    assert reachable() and "local_files_only" not in hub_settings()
    commit = hub.commit(REPO)
    result = convert(REPO, tmp_path / "out", outtype="BF16", revision=commit)
    assert result.source.name == commit
    with pytest.raises(FetchError, match="no revision"):
        convert(REPO, tmp_path / "out", revision="v9-does-not-exist")


def test_unknown_repo_and_offline_miss(hub, tmp_path, monkeypatch):
    with pytest.raises(FetchError, match="not a model repo"):
        convert("nobody/nothing", tmp_path / "out")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError, match="not in the local Hugging Face cache"):
        convert(REPO, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is created before the source is found
