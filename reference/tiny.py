"""Tiny R1-shaped checkpoints: random weights at tiny widths, but the real tokenizers and chat templates.

`tiny_checkpoint("qwen2")` is shaped like DeepSeek-R1-Distill-Qwen (q/k/v biases, GQA, padded vocabulary of
151936) and `tiny_checkpoint("llama")` like DeepSeek-R1-Distill-Llama (Llama-3.1 `rope_scaling` of type llama3,
GQA, vocabulary 128256). Their tokenizers are the llama.cpp vocab-test vocabularies (ggml-vocab-qwen2.gguf,
ggml-vocab-llama-bpe.gguf) with the R1-Distill special tokens put where the real repos have them, so the
pre-tokenizer hash that llama.cpp's converter computes is the real one. Weights are bf16 safetensors, as in the
real repos; everything is built once per cache and seeded.

Three more carry the other pre-tokenizer shapes a tokenizer.json has, spelled as the Hugging Face repos spell
them: "gpt2" (GPT-2's vocabulary, the plain `ByteLevel` pre-tokenizer with its built-in regex), "smollm"
(SmolLM2's vocabulary from the embedded GGUF, `Digits` then `ByteLevel`) and "qwen2-plain" (Qwen2 without R1's
BOS), each on a tiny Llama or Qwen2 body.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from gguf import TokenType

from reference.cache import cached_dir
from reference.sdist import chat_template, vocab_gguf

VERSION = "v1"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
THINK, END_THINK = "<think>", "</think>"


@dataclass(frozen=True)
class TinySpec:
    family: str
    vocab: str  # ggml-vocab-<vocab>.gguf, or "smollm2": the embedded SmolLM2 GGUF
    template: str | None  # models/templates/<template>.jinja; None: the vocab file's own, if any
    pre: str  # the tokenizer.ggml.pre the real model has
    n_base: int  # tokens kept from the vocab file as they are
    added: dict[int, tuple[str, bool]]  # id -> (text, special)
    bos: int
    eos: int
    pad: int
    vocab_size: int  # config.json's, padded like the real ones
    model_type: str
    config: dict
    add_bos: bool = True
    hf_pre_tokenizer: dict | None = None  # tokenizer.json's pre_tokenizer as the real repo has it (None: export's)


QWEN2 = TinySpec(
    family="qwen2", vocab="qwen2", template="deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", pre="deepseek-r1-qwen",
    n_base=151643,
    added={151643: (EOS, True), 151644: (USER, False), 151645: (ASSISTANT, False), 151646: (BOS, True),
           151647: ("<|EOT|>", True), 151648: (THINK, False), 151649: (END_THINK, False)},
    bos=151646, eos=151643, pad=151643, vocab_size=151936, model_type="qwen2",
    config=dict(hidden_size=128, intermediate_size=320, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
                tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096, max_window_layers=21),
)

LLAMA = TinySpec(
    family="llama", vocab="llama-bpe", template="deepseek-ai-DeepSeek-R1-Distill-Llama-8B", pre="llama-bpe",
    n_base=128000,
    added={128000: (BOS, True), 128001: (EOS, True), 128011: (USER, False), 128012: (ASSISTANT, False),
           128013: (THINK, False), 128014: (END_THINK, False)},
    bos=128000, eos=128001, pad=128001, vocab_size=128256, model_type="llama",
    config=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=False, mlp_bias=False, attention_bias=False,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
)

_TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=32, max_position_embeddings=8192, rope_theta=10000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=False, mlp_bias=False, attention_bias=False)
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

GPT2 = TinySpec(
    family="gpt2", vocab="gpt-2", template=None, pre="gpt-2", n_base=50257, added={}, bos=50256, eos=50256,
    pad=50256, vocab_size=50257, model_type="llama", config=_TINY_LLAMA, add_bos=False, hf_pre_tokenizer=_BYTE_LEVEL,
)

SMOLLM = TinySpec(
    family="smollm", vocab="smollm2", template=None, pre="smollm", n_base=49152, added={}, bos=1, eos=2, pad=2,
    vocab_size=49152, model_type="llama", config=_TINY_LLAMA, add_bos=False,
    hf_pre_tokenizer={"type": "Sequence",
                      "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
)

QWEN2_PLAIN = replace(
    QWEN2, family="qwen2-plain", template="Qwen-Qwen2.5-7B-Instruct", pre="qwen2", add_bos=False, bos=151643,
    eos=151645,
    added={151643: ("<|endoftext|>", True), 151644: ("<|im_start|>", True), 151645: ("<|im_end|>", True)},
)

SPECS = {s.family: s for s in (QWEN2, LLAMA, GPT2, SMOLLM, QWEN2_PLAIN)}


def tiny_checkpoint(family: str) -> Path:
    """The cached folder of the tiny `family` checkpoint (one of SPECS: "qwen2", "llama", "gpt2", …)."""
    spec = SPECS[family]
    return cached_dir(f"tiny-{family}-{VERSION}", lambda tmp: _build(spec, tmp))


def _build(spec: TinySpec, folder: Path) -> None:
    _write_tokenizer(spec, folder)
    _write_model(spec, folder)


def _vocab_file(spec: TinySpec) -> Path:
    from quantkit.convert.embedded import embedded_gguf

    return embedded_gguf() if spec.vocab == "smollm2" else vocab_gguf(spec.vocab)


def _vocab(spec: TinySpec):
    from quantkit.convert.export.tokenizer import read_gguf_vocab
    from quantkit.gguf.reader import open_gguf
    from quantkit.convert.pretokenizers import get_pre_tokenizer

    base = read_gguf_vocab(open_gguf(_vocab_file(spec)))
    n_tokens = max([*spec.added, spec.n_base - 1]) + 1
    tokens = list(base.tokens[:spec.n_base])
    types = list(base.token_types[:spec.n_base])
    for i in range(spec.n_base, n_tokens):
        text, special = spec.added.get(i, (f"<|reserved_{i}|>", True))
        tokens.append(text)
        types.append(int(TokenType.CONTROL if special else TokenType.USER_DEFINED))
    return replace(base, tokens=tokens, token_types=types, pre=get_pre_tokenizer(spec.pre), add_bos=spec.add_bos,
                   add_eos=False, bos_id=spec.bos, eos_id=spec.eos, pad_id=spec.pad, unk_id=None,
                   chat_template=chat_template(spec.template) if spec.template else base.chat_template)


def _write_tokenizer(spec: TinySpec, folder: Path) -> None:
    from quantkit.convert.export.tokenizer import tokenizer_config, tokenizer_json

    vocab = _vocab(spec)
    tok = tokenizer_json(vocab)
    if spec.hf_pre_tokenizer is not None:
        tok["pre_tokenizer"] = spec.hf_pre_tokenizer
    config = tokenizer_config(vocab, 16384)
    # The real repos mark <｜User｜>/<｜Assistant｜> and the think tags as added but not special.
    for entry in tok["added_tokens"]:
        entry["special"] = spec.added.get(entry["id"], ("", True))[1]
        config["added_tokens_decoder"][str(entry["id"])]["special"] = entry["special"]
    (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))


def _write_model(spec: TinySpec, folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(1234)
    cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[spec.model_type]
    config = cls[0](vocab_size=spec.vocab_size, bos_token_id=spec.bos, eos_token_id=spec.eos,
                    initializer_range=0.2, torch_dtype="bfloat16", **spec.config)
    model = cls[1](config).to(torch.bfloat16)
    with torch.no_grad():  # norms start at 1: make them vary so a wrong mapping shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.5 * torch.randn_like(p))
    model.config.architectures = [cls[1].__name__]
    model.save_pretrained(folder, safe_serialization=True)
    _legacy_config(folder / "config.json")
    model.generation_config.bos_token_id = spec.bos
    model.generation_config.eos_token_id = spec.eos
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.95
    model.generation_config.save_pretrained(folder)


def _legacy_config(path: Path) -> None:
    """Write config.json the way the real repos spell it (transformers 4.x: `rope_theta`, `rope_scaling`,
    `torch_dtype`), which is what converters meet in the wild."""
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope
    config["torch_dtype"] = config.pop("dtype", "bfloat16")
    path.write_text(json.dumps(config, indent=2) + "\n")
