"""estimate-memory through the CLI: targets of every kind, a remote header over HTTP ranges, and bad inputs."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.hub_server import FakeHub
from tests.test_bad_inputs import assert_clean_failure

runner = CliRunner()


def test_label_json_is_one_document():
    result = runner.invoke(app, ["estimate-memory", "8B", "--json", "-t", "Q4_K_M", "-t", "Q8_0,F16", "--vram", "24"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [t["type"] for t in data["types"]] == ["Q4_K_M", "Q8_0", "F16"]
    q4 = data["types"][0]
    # Published llama.cpp figure for Llama-3.1-8B Q4_K_M: 4.58 GiB
    assert round(q4["file_bytes"] / 2**30, 2) == 4.58
    assert q4["fit"]["n_gpu_layers"] == 33


@pytest.mark.slow
def test_table_and_tensors(smollm2_gguf):
    result = runner.invoke(app, ["estimate-memory", str(smollm2_gguf), "-t", "Q4_K_M", "--tensors"])
    assert result.exit_code == 0, result.output
    assert "Q4_K_M" in result.stdout and "blk.29.ffn_down.weight" in result.stdout


def test_local_hf_folder(tmp_path):
    cfg = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536, "num_hidden_layers": 28,
           "num_attention_heads": 12, "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["estimate-memory", str(tmp_path), "--json", "-t", "Q4_K_M"])
    assert result.exit_code == 0, result.output
    folder = json.loads(result.stdout)
    label = json.loads(runner.invoke(app, ["estimate-memory", "1.5B", "--json", "-t", "Q4_K_M"]).stdout)
    assert folder["types"][0]["file_bytes"] == label["types"][0]["file_bytes"]


@pytest.fixture()
def hub(tmp_path, smollm2_gguf):
    repo = tmp_path / "models" / "org" / "smol"
    repo.mkdir(parents=True)
    shutil.copyfile(smollm2_gguf, repo / "smol-Q4_1.gguf")
    (repo / "README.md").write_text("not a gguf\n" * 1000)
    (repo / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
                                                  "num_hidden_layers": 24, "num_attention_heads": 14,
                                                  "num_key_value_heads": 2, "intermediate_size": 4864,
                                                  "vocab_size": 151936}))
    (repo / "bad" ).mkdir()
    (repo / "bad" / "config.json").write_text("{ not json")
    return tmp_path


@pytest.mark.slow
def test_remote_gguf_reads_only_the_header(hub, smollm2_gguf, monkeypatch):
    with FakeHub(hub) as server:
        url = f"{server.endpoint}/org/smol/resolve/main/smol-Q4_1.gguf"
        remote = runner.invoke(app, ["estimate-memory", url, "--json", "-t", "Q4_K_M,Q8_0"])
        assert remote.exit_code == 0, remote.output
        sent = server.bytes_sent["smol-Q4_1.gguf"]
    size = smollm2_gguf.stat().st_size
    assert size > 90e6 and sent < 4e6, (size, sent)
    local = runner.invoke(app, ["estimate-memory", str(smollm2_gguf), "--json", "-t", "Q4_K_M,Q8_0"])
    r, l = json.loads(remote.stdout), json.loads(local.stdout)
    assert r["source"] == "remote-gguf" and r["types"] == l["types"]


@pytest.mark.slow
def test_hub_repo_id_fetches_config_only(hub, monkeypatch):
    from huggingface_hub import constants

    with FakeHub(hub) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub / "hf-cache"))
        result = runner.invoke(app, ["estimate-memory", "org/smol", "--json", "-t", "Q4_K_M"])
        paths = {p for _, p, _ in server.requests}
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_layer"] == 24
    assert not any(p.endswith(".gguf") for p in paths)


@pytest.mark.slow
def test_remote_without_range_support(hub):
    with FakeHub(hub, ranges=False) as server:
        assert_clean_failure(["estimate-memory", f"{server.endpoint}/org/smol/resolve/main/smol-Q4_1.gguf"],
                             "does not support range requests")
        assert server.bytes_sent["smol-Q4_1.gguf"] < 4e6


@pytest.mark.slow
def test_remote_repo_path_form(hub, monkeypatch):
    with FakeHub(hub) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        result = runner.invoke(app, ["estimate-memory", "org/smol/smol-Q4_1.gguf", "--json", "-t", "Q8_0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source"] == "remote-gguf"


@pytest.mark.slow
def test_remote_not_gguf(hub):
    with FakeHub(hub) as server:
        assert_clean_failure(["estimate-memory", f"{server.endpoint}/org/smol/resolve/main/README.md"], "not a GGUF")
        assert_clean_failure(["estimate-memory", f"{server.endpoint}/org/smol/resolve/main/nope.gguf"], "404")


def test_unknown_label_suggests_known():
    err = assert_clean_failure(["estimate-memory", "9B"], "unknown model")
    assert "1.5B" in err and "671B" in err


def test_absurd_ctx():
    assert_clean_failure(["estimate-memory", "8B", "--ctx", "999999999999"], "out of range")
    assert_clean_failure(["estimate-memory", "8B", "--ctx", "0"], "out of range")


@pytest.mark.slow
def test_malformed_config(hub, tmp_path):
    assert_clean_failure(["estimate-memory", str(hub / "models" / "org" / "smol" / "bad")], "not valid JSON")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}))
    assert_clean_failure(["estimate-memory", str(tmp_path / "m")], "config.json lacks")


def test_bad_types_and_options():
    assert_clean_failure(["estimate-memory", "8B", "-t", "Q4_K_X"], "unknown quant type")
    assert_clean_failure(["estimate-memory", "8B", "--kv-type", "q5_0"], "unknown KV cache type")
    assert_clean_failure(["estimate-memory", "8B", "--kv-type", "q8_0", "--no-flash-attn"], "flash attention")
    assert_clean_failure(["estimate-memory", "8B", "--gpus", "24,x"], "--gpus")
