"""`export` on tiny llama/qwen2 GGUFs written here: exact values back, names transformers expects, llama.cpp's
q/k permutation undone, llama3 rope scaling recovered, and the same logits from transformers as from llama.cpp."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from quantkit.errors import UnsupportedModelError
from quantkit.convert.export import export_gguf
from quantkit.convert.export.config import llama3_rope_scaling
from quantkit.convert.export.safetensors import f32_to_bf16
from tests._fixtures.llama_reference import reference_llama
from tests._fixtures.tiny_gguf_models import (TinyShape, llama3_rope_freqs, llama_cpp_permute, reduced_vocab_gguf,
                                              write_tiny_model)

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

LLAMA31 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "old_context_len": 8192}
# head_dim 64 at theta 500000 puts three frequencies between the llama3 cut-offs, so the fit has work to do
SHAPES = {
    "llama": TinyShape(n_embd=128, n_head=2, n_head_kv=1, n_ff=96, llama3_rope=LLAMA31),
    "qwen2": TinyShape(n_embd=64, n_head=4, n_head_kv=2, n_ff=96, rope_theta=1e6, tied=True),
}
VOCABS = {"llama": "llama-bpe", "qwen2": "qwen2"}


def hf_name(gguf_name: str) -> str:
    """Written out independently of the package: transformers' Llama/Qwen2 names for llama.cpp's."""
    top = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    block = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{block[parts[2]]}.{parts[3]}"
    return f"{top[parts[0]]}.{parts[1]}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch → (gguf path, tensors as stored in the GGUF, f32 export folder)."""
    root = tmp_path_factory.mktemp("tiny")
    models = {}
    for arch, shape in SHAPES.items():
        gguf_path = root / f"{arch}.gguf"
        tensors = write_tiny_model(gguf_path, arch, reduced_vocab_gguf(VOCABS[arch]), shape, biases=True)
        result = export_gguf(gguf_path, root / f"{arch}-hf", dtype="f32")
        models[arch] = (gguf_path, tensors, result.out_dir)
    return models


@pytest.mark.parametrize("arch", SHAPES)
def test_f32_export_gives_back_the_exact_values(tiny, arch):
    gguf_path, stored, out = tiny[arch]
    exported = safetensors_numpy.load_file(out / "model.safetensors")
    expected_names = {hf_name(n) for n in stored if n != "rope_freqs.weight"}
    if arch == "llama":  # q/k/v biases mean attention_bias, which gives o_proj a bias too: zeros
        expected_names |= {f"model.layers.{i}.self_attn.o_proj.bias" for i in range(SHAPES[arch].n_layer)}
        assert not any(exported[f"model.layers.{i}.self_attn.o_proj.bias"].any() for i in range(SHAPES[arch].n_layer))
    assert set(exported) == expected_names
    shape = SHAPES[arch]
    for name, original in stored.items():
        if name == "rope_freqs.weight":
            continue
        values = exported[hf_name(name)]
        assert values.dtype == np.float32 and values.shape == original.shape, name
        if arch == "llama" and name.startswith("blk.") and name.split(".")[2] in ("attn_q", "attn_k"):
            heads = shape.n_head if "attn_q" in name else shape.n_head_kv
            assert not np.array_equal(values, original), f"{name}: the q/k permutation was not undone"
            values = llama_cpp_permute(values, heads)
        np.testing.assert_array_equal(values, original.astype(np.float32), err_msg=name)


@pytest.mark.parametrize("arch", SHAPES)
def test_config_and_names_are_what_transformers_expects(tiny, arch):
    _, stored, out = tiny[arch]
    shape = SHAPES[arch]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (
        shape.n_layer, shape.n_embd, shape.n_ff)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (shape.n_head, shape.n_head_kv)
    assert config["max_position_embeddings"] == shape.n_ctx
    assert config["rope_theta"] == shape.rope_theta
    assert math.isclose(config["rms_norm_eps"], shape.eps, rel_tol=1e-6)
    assert config["tie_word_embeddings"] is shape.tied
    assert config["vocab_size"] == stored["token_embd.weight"].shape[0]
    assert config["torch_dtype"] == "float32"
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    wanted = set(model.state_dict())
    if shape.tied:
        wanted.discard("lm_head.weight")
    written = set(safetensors_numpy.load_file(out / "model.safetensors"))
    assert written == wanted


def test_llama3_rope_scaling_is_recovered(tiny):
    _, stored, out = tiny["llama"]
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    shape = SHAPES["llama"]
    base = 1.0 / (shape.rope_theta ** (np.arange(0, shape.head_dim, 2, dtype=np.float64) / shape.head_dim))
    expected = base / stored["rope_freqs.weight"]
    np.testing.assert_allclose(model.model.rotary_emb.inv_freq.double().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("params", [
    LLAMA31,  # Llama-3.1 / R1-Distill-Llama-8B
    {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "old_context_len": 8192},  # Llama-3.2
    {"factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0, "old_context_len": 16384},
])
def test_llama3_rope_parameters_fit(params):
    factors = llama3_rope_freqs(500000.0, 128, **params)
    got = llama3_rope_scaling(factors, 500000.0, 128)
    assert got == {"rope_type": "llama3", "factor": params["factor"], "low_freq_factor": params["low_freq_factor"],
                   "high_freq_factor": params["high_freq_factor"],
                   "original_max_position_embeddings": params["old_context_len"]}


def test_rope_freqs_that_are_not_llama3_are_refused():
    factors = np.linspace(1, 8, 64, dtype=np.float32) ** 1.5
    with pytest.raises(UnsupportedModelError, match="llama3"):
        llama3_rope_scaling(factors, 500000.0, 128)


@pytest.mark.parametrize("arch", SHAPES)
def test_transformers_logits_match_llama_cpp(tiny, arch):
    """Random weights, f32 on both sides: any mistake in layout, biases, GQA or rope shows at once."""
    llama_cpp = pytest.importorskip("llama_cpp")
    gguf_path, _, out = tiny[arch]
    # an f32 KV cache (llama.cpp defaults to f16) so that both sides compute in f32 throughout
    llm = reference_llama(gguf_path, n_ctx=256, n_batch=256, logits_all=True, n_threads=2,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    text = "The quick brown fox jumps over the lazy dog, then rests in the shade of an old oak tree. " * 3
    tokens = llm.tokenize(text.encode(), add_bos=False)
    llm.eval(tokens)
    ref = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    del llm
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0].double().numpy()
    scale = np.abs(ref).max()
    err = np.abs(got - ref).max()
    print(f"\n{arch}: {len(tokens)} tokens, max |Δlogit| {err:.2e} (logits up to {scale:.2f})")
    assert err < 2e-3 * scale
    assert (got.argmax(-1) == ref.argmax(-1)).mean() == 1.0


def test_bf16_and_f16_exports_round_like_torch(tiny, tmp_path):
    gguf_path, _, f32_dir = tiny["qwen2"]
    exact = safetensors_numpy.load_file(f32_dir / "model.safetensors")
    export_gguf(gguf_path, tmp_path / "bf16", dtype="bf16")
    export_gguf(gguf_path, tmp_path / "f16", dtype="f16")
    from safetensors.torch import load_file

    bf16 = load_file(tmp_path / "bf16" / "model.safetensors")
    f16 = safetensors_numpy.load_file(tmp_path / "f16" / "model.safetensors")
    torch_bf16 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype
    assert torch_bf16 == torch.bfloat16
    for name, values in exact.items():
        assert bf16[name].dtype == torch.bfloat16
        want = torch.from_numpy(values).to(torch.bfloat16)
        assert torch.equal(bf16[name].view(torch.int16), want.view(torch.int16)), name
        np.testing.assert_array_equal(f16[name], values.astype(np.float16), err_msg=name)


def test_bf16_rounding_on_hard_values():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0x00000001,
                        0x80000000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32)  # ties, max, inf, NaN
    values = np.concatenate([bits, special]).view(np.float32)
    got = f32_to_bf16(values)
    want = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.isnan(torch.from_numpy(got[nan].view(np.int16)).view(torch.bfloat16).float().numpy()).all()


def test_sharded_export_loads_and_equals_single_file(tiny, tmp_path):
    gguf_path, _, f32_dir = tiny["llama"]
    total = (f32_dir / "model.safetensors").stat().st_size
    result = export_gguf(gguf_path, tmp_path / "sharded", dtype="f32", max_shard_bytes=total // 3)
    out = result.out_dir
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert all(name in result.files for name in shards)
    single = safetensors_numpy.load_file(f32_dir / "model.safetensors")
    merged: dict[str, np.ndarray] = {}
    for shard in shards:
        part = safetensors_numpy.load_file(out / shard)
        assert all(index["weight_map"][k] == shard for k in part)
        merged.update(part)
    assert merged.keys() == single.keys()
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in single.values())
    for k in single:
        np.testing.assert_array_equal(merged[k], single[k])
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.model.embed_tokens.weight.shape[0] == single["model.embed_tokens.weight"].shape[0]


def test_qwen2_without_biases_gets_zero_biases(tmp_path):
    path = tmp_path / "nobias.gguf"
    write_tiny_model(path, "qwen2", reduced_vocab_gguf("qwen2"),
                     TinyShape(n_layer=1, tied=True), biases=False)
    out = export_gguf(path, tmp_path / "hf", dtype="f32").out_dir
    weights = safetensors_numpy.load_file(out / "model.safetensors")
    for p in ("q", "k", "v"):
        bias = weights[f"model.layers.0.self_attn.{p}_proj.bias"]
        assert bias.shape == (weights[f"model.layers.0.self_attn.{p}_proj.weight"].shape[0],)
        assert not bias.any()


def test_result_lists_what_was_written(tiny):
    gguf_path, _, out = tiny["qwen2"]
    names = sorted(p.name for p in Path(out).iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    generation = json.loads((out / "generation_config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"] is not None
