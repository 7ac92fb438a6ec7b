"""`quantkit push` through huggingface_hub's real upload path (create_repo, preupload, LFS batch, object PUT,
commit) against the local fake Hub: every file arrives with its bytes, an interrupted push resumes with only
what is missing, a bad token is one line and exit 1, --dry-run sends nothing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.hub_server import FakeHub

runner = CliRunner()
TOKEN = "hf_write_token"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the LFS path: hf_xet's protocol (used when it is installed) needs Xet storage servers the fake Hub lacks
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub(tmp_path / "hub") as server:
        server.write_tokens = {TOKEN}
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))  # not the user's login
        yield server


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """A run's folder: the card, the picture, two GGUFs (one in shards) and an imatrix, as bytes."""
    out = tmp_path / "out"
    models = out / "models"
    models.mkdir(parents=True)
    (out / "README.md").write_text("---\nlicense: mit\ntags:\n- gguf\n---\n# card\n")
    (out / "report.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    (out / "report.md").write_text("not pushed")
    for i, name in enumerate(["M-F16.gguf", "M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf",
                              "M-F16.imatrix-abc.gguf"]):
        (models / name).write_bytes(b"GGUF" + bytes([i]) * (50_000 + 1000 * i))
    (models / ".M-Q4_0.gguf.partial-123").write_bytes(b"half")
    return out


def _pushed(out: Path) -> dict[str, Path]:
    files = {"README.md": out / "README.md", "report.png": out / "report.png"}
    files.update({p.name: p for p in (out / "models").glob("*.gguf")})
    return files


def test_dry_run_lists_and_sends_nothing(hub, out_dir):
    result = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    listed = {f["path_in_repo"]: f["n_bytes"] for f in json.loads(result.stdout)["files"]}
    assert listed == {name: p.stat().st_size for name, p in _pushed(out_dir).items()}
    assert hub.requests == []


def test_push_uploads_every_file(hub, out_dir):
    result = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF", "--private"])
    assert result.exit_code == 0, result.output
    assert hub.created == {"me/M-GGUF": True}
    repo = hub.repo_dir("me/M-GGUF")
    for name, local in _pushed(out_dir).items():
        assert (repo / name).read_bytes() == local.read_bytes(), name
    assert sorted(p.name for p in repo.iterdir()) == sorted(_pushed(out_dir))
    lfs = {hashlib.sha256(p.read_bytes()).hexdigest() for n, p in _pushed(out_dir).items() if n != "README.md"}
    assert set(hub.lfs_puts) == lfs and len(hub.lfs_puts) == len(lfs)  # GGUFs and picture through LFS, once each
    methods = {(m, p.split("/")[-2] if "/api/models/" in p else p) for m, p, _ in hub.requests}
    assert ("POST", "/api/repos/create") in methods and ("POST", "preupload") in methods
    assert ("POST", "commit") in methods and ("POST", "/me/M-GGUF.git/info/lfs/objects/batch") in methods
    # a second push of the same files sends no byte again and makes no empty commit
    before = len(hub.lfs_puts)
    again = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF"])
    assert again.exit_code == 0, again.output
    assert len(hub.lfs_puts) == before and len(hub.commits) == 1


def test_interrupted_push_resumes(hub, out_dir):
    """The Hub fails one GGUF's upload: the push fails in one line; the next sends only that file."""
    failing = out_dir / "models" / "M-Q8_0-00002-of-00002.gguf"
    oid = hashlib.sha256(failing.read_bytes()).hexdigest()
    hub.fail_lfs_once = {oid}
    first = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF", "--revision", "v1"])
    assert first.exit_code == 1
    assert first.stderr.count("\n") == 1 and first.stderr.startswith("error: the upload to me/M-GGUF stopped")
    assert oid not in hub.lfs_puts and hub.commits == []
    arrived = set(hub.lfs_puts)
    assert len(arrived) == 4  # the other GGUFs and the picture went up before the push stopped
    second = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF", "--revision", "v1"])
    assert second.exit_code == 0, second.output
    assert hub.lfs_puts[len(arrived):] == [oid]  # only what was missing
    branch = hub.root / "branches" / "me/M-GGUF" / "v1"
    for name, local in _pushed(out_dir).items():
        assert (branch / name).read_bytes() == local.read_bytes(), name
    assert [c["revision"] for c in hub.commits] == ["v1"]


@pytest.mark.parametrize("token", ["hf_wrong", None])
def test_bad_or_missing_token(hub, out_dir, monkeypatch, token):
    if token is None:
        monkeypatch.delenv("HF_TOKEN")
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    result = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF"])
    assert result.exit_code == 1
    err = result.stderr
    assert err.count("\n") == 1 and "Traceback" not in result.output, err
    assert ("refused the token" if token else "no Hugging Face token") in err
    assert hub.lfs_puts == [] and hub.commits == []


def test_push_names_the_repo_in_the_runs_card(hub, out_dir):
    """The card `quantkit run` wrote names no repo: push writes it again for the repo it goes to."""
    from tests.test_card import REPORT

    (out_dir / "report.json").write_text(json.dumps(REPORT))
    (out_dir / "README.md").write_text("# placeholder card of <you>/M-GGUF\n")
    assert runner.invoke(app, ["push", str(out_dir), "me/M-GGUF"]).exit_code == 0
    card = (hub.repo_dir("me/M-GGUF") / "README.md").read_text()
    assert "ollama run hf.co/me/M-GGUF:Q4_K_M" in card and "<you>/" not in card


def test_token_from_the_login_cache(hub, out_dir, monkeypatch, tmp_path):
    """Without HF_TOKEN, the token `hf auth login` saved is used."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(constants.HF_TOKEN_PATH).write_text(TOKEN)
    result = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF"])
    assert result.exit_code == 0, result.output
    assert (hub.repo_dir("me/M-GGUF") / "README.md").read_bytes() == (out_dir / "README.md").read_bytes()


def test_push_needs_a_card(hub, out_dir):
    (out_dir / "README.md").unlink()
    result = runner.invoke(app, ["push", str(out_dir), "me/M-GGUF"])
    assert result.exit_code == 1 and "quantkit card" in result.stderr
