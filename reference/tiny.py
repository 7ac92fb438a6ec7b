"""Tiny R1-shaped checkpoints: random weights at tiny widths, but the real tokenizers and chat templates.

`tiny_checkpoint("qwen2")` is shaped like DeepSeek-R1-Distill-Qwen (q/k/v biases, GQA, padded vocabulary of
151936) and `tiny_checkpoint("llama")` like DeepSeek-R1-Distill-Llama (Llama-3.1 `rope_scaling` of type llama3,
GQA, vocabulary 128256). Their tokenizers are the llama.cpp vocab-test vocabularies (ggml-vocab-qwen2.gguf,
ggml-vocab-llama-bpe.gguf) with the R1-Distill special tokens put where the real repos have them, so the
pre-tokenizer hash that llama.cpp's converter computes is the real one. Weights are bf16 safetensors, as in the
real repos; everything is built once per cache and seeded.
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
    vocab: str  # ggml-vocab-<vocab>.gguf
    template: str  # models/templates/<template>.jinja
    pre: str  # the tokenizer.ggml.pre the real distill has
    n_base: int  # ordinary BPE tokens kept from the vocab file
    added: dict[int, tuple[str, bool]]  # id -> (text, special)
    bos: int
    eos: int
    pad: int
    vocab_size: int  # config.json's, padded like the real ones
    model_type: str
    config: dict


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

SPECS = {s.family: s for s in (QWEN2, LLAMA)}


def tiny_checkpoint(family: str) -> Path:
    """The cached folder of the tiny `family` ("qwen2" or "llama") checkpoint."""
    spec = SPECS[family]
    return cached_dir(f"tiny-{family}-{VERSION}", lambda tmp: _build(spec, tmp))


def _build(spec: TinySpec, folder: Path) -> None:
    _write_tokenizer(spec, folder)
    _write_model(spec, folder)


def _vocab(spec: TinySpec):
    from quantkit.convert.export.tokenizer import read_gguf_vocab
    from quantkit.gguf.reader import open_gguf
    from quantkit.convert.pretokenizers import get_pre_tokenizer

    base = read_gguf_vocab(open_gguf(vocab_gguf(spec.vocab)))
    n_tokens = max(spec.added) + 1
    tokens = list(base.tokens[:spec.n_base])
    types = list(base.token_types[:spec.n_base])
    for i in range(spec.n_base, n_tokens):
        text, special = spec.added.get(i, (f"<|reserved_{i}|>", True))
        tokens.append(text)
        types.append(int(TokenType.CONTROL if special else TokenType.USER_DEFINED))
    return replace(base, tokens=tokens, token_types=types, pre=get_pre_tokenizer(spec.pre), add_bos=True,
                   add_eos=False, bos_id=spec.bos, eos_id=spec.eos, pad_id=spec.pad, unk_id=None,
                   chat_template=chat_template(spec.template))


def _write_tokenizer(spec: TinySpec, folder: Path) -> None:
    from quantkit.convert.export.tokenizer import tokenizer_config, tokenizer_json

    vocab = _vocab(spec)
    tok = tokenizer_json(vocab)
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
