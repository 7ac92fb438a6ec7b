"""wiki.test.raw comes from the Hub's ggml-org/ci zip once, byte for byte, through huggingface_hub (here against
tests/_fixtures/hub_server.py, a local server that answers like the Hub)."""
from __future__ import annotations

import zipfile

import pytest

from quantkit.measure.texts import DATASETS, dataset_path, read_text
from quantkit.errors import DatasetUnavailableError
from tests._fixtures.hub_server import FakeHub

# bytes a text file may hold that must survive: CRLF, a BOM-less UTF-8 accent, trailing spaces, a final newline
WIKI = " \n = Robert Boulter = \n \n Robert Boulter is an English film , télévision and theatre actor . \r\n" * 50


def _publish(root):
    folder = root / "datasets" / "ggml-org" / "ci"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "wikitext-2-raw-v1.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wikitext-2-raw/wiki.test.raw", WIKI.encode())
        zf.writestr("wikitext-2-raw/wiki.train.raw", b"not this one")


def test_download_once_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    _publish(tmp_path / "hub")
    with FakeHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        path = dataset_path("wikitext-2")
        assert path.read_bytes() == WIKI.encode()
        assert any("wikitext-2-raw-v1.zip" in r[1] for r in hub.requests)
    # the server is gone: the cached copy is used, nothing is asked of the network
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert dataset_path("wikitext-2") == path
    assert read_text(path) == WIKI.encode()[:-1]  # llama-perplexity's -f drops one final newline
    assert not list(path.parent.glob(".*partial*"))


def test_missing_member_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hub" / "datasets" / "ggml-org" / "ci"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "wikitext-2-raw-v1.zip", "w") as zf:
        zf.writestr("other.txt", b"x")
    with FakeHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(DatasetUnavailableError, match="lacks wikitext-2-raw/wiki.test.raw"):
            dataset_path("wikitext-2")
    assert not DATASETS["wikitext-2"].cached_path.exists()
