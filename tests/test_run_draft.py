"""A recipe naming a draft: the job downloads the draft source from the (local, fake) Hub like any source,
converts it and quantizes it to draft_type, keeps it in its models folder, speculates with it in chat and eval,
and makes nothing again on the next run; a local .gguf draft is used as it is."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.gguf.reader import file_type_name, read_gguf
from reference.tiny import tiny_checkpoint
from tests._fixtures.hub_server import FakeHub
from tests._fixtures.run_recipe import run_args, write_recipe

pytestmark = pytest.mark.slow
SOURCE, DRAFT = "org/Tiny-Target", "org/Tiny-Draft"

RECIPE = """\
source = "{source}"
outtype = "F16"
ladder = ["Q8_0"]

[chat]
prompt = "Count: one two three one two three one two three"
max_tokens = 12
temperature = 0.0
ctx = 256
{chat}

[eval]
task = "arith"
limit = 2
max_tokens = 8
ctx = 512
parallel = 2
{eval}
"""
STEPS = "source,convert,quantize,chat,eval"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The same tiny checkpoint (SmolLM2's tokenizer) served as the source and as the draft source."""
    checkpoint = tiny_checkpoint("smollm")
    for repo in (SOURCE, DRAFT):
        folder = tmp_path / "hub" / "models" / repo
        folder.mkdir(parents=True)
        for f in checkpoint.iterdir():
            if not f.name.startswith("."):
                (folder / f.name).symlink_to(f)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _run(recipe, out) -> dict:
    result = CliRunner().invoke(app, run_args(recipe, out, "--only", STEPS, "--json"))
    assert result.exit_code == 0, result.output
    return {s["step"]: s["status"] for s in json.loads(result.stdout)["steps"]}


def _record(out, name: str) -> dict:
    return json.loads((out / "steps" / f"{name}.json").read_text())


def test_a_hub_draft_is_made_once_and_drafts_for_chat_and_eval(tmp_path, hub):
    draft = f'draft = "{DRAFT}"\ndraft_p_min = 0.0'  # a random tiny model is never sure: draft anyway
    recipe = write_recipe(tmp_path / "r", RECIPE.format(source=SOURCE, chat=draft, eval=draft + '\ndraft_type = "Q4_0"'))
    out = tmp_path / "out"
    assert _run(recipe, out)["chat"] == "done"
    (made,) = (out / "models" / "drafts").iterdir()  # the quant only: its float base is gone
    assert made.name == "Tiny-Draft-Q4_0.gguf" and file_type_name(read_gguf(made).header.get("general.file_type")) == "Q4_0"
    record = _record(out, "draft-org_Tiny-Draft-Q4_0")
    assert record["inputs"] == {"source": DRAFT, "type": "Q4_0"} and record["result"]["path"] == str(made)
    assert hub.bytes_sent["model.safetensors"] > 0
    chat = _record(out, "chat")["result"]
    assert chat["drafted_tokens"] > 0 and chat["file"].endswith("Q8_0.gguf")
    samples = [json.loads(line) for f in (out / "eval").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert samples and sum(s["drafted_tokens"] for s in samples) > 0
    # again: everything kept, the draft neither downloaded nor made
    sent, mtime = dict(hub.bytes_sent), made.stat().st_mtime_ns
    assert _run(recipe, out) == {"source": "kept", "convert": "kept", "quantize": "kept", "perplexity": "skipped",
                                 "bench": "skipped", "memory": "skipped", "chat": "kept", "eval": "kept",
                                 "report": "skipped"}
    # a changed chat prompt redoes chat with the draft already there
    write_recipe(tmp_path / "r", RECIPE.format(source=SOURCE, chat=draft, eval=draft).replace("Count:", "Say:"))
    assert _run(recipe, out)["chat"] == "done"
    assert dict(hub.bytes_sent) == sent and made.stat().st_mtime_ns == mtime


def test_a_local_gguf_draft_is_used_as_it_is(tmp_path, hub):
    from quantkit.convert import convert

    small = convert(SOURCE, tmp_path / "r", outtype="F16").base.path  # beside the recipe: a relative path
    recipe = write_recipe(tmp_path / "r", RECIPE.format(source=SOURCE, chat=f'draft = "{small.name}"\ndraft_p_min = 0.0',
                                                     eval=""))
    out = tmp_path / "out"
    assert _run(recipe, out)["chat"] == "done"
    assert not (out / "models" / "drafts").exists()
    chat = _record(out, "chat")
    assert chat["inputs"]["draft"]["name"] == small.name and chat["result"]["drafted_tokens"] > 0
