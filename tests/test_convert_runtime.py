"""Independent checks of converted files: llama.cpp's forward pass on our F32 GGUF against transformers' on the
source checkpoint, and llama.cpp's tokenization of our GGUF against the Hugging Face tokenizer's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit.convert import convert_checkpoint
from reference.sdist import llama_cpp_source
from reference.tiny import tiny_checkpoint

pytestmark = pytest.mark.slow

FAMILIES = ("qwen2", "llama", "smollm2")
PROMPT = "<｜User｜>Why is the sky blue? Answer in one sentence.<｜Assistant｜><think>\nRayleigh scattering"


def _checkpoint(family: str) -> Path:
    if family == "smollm2":
        from quantkit.convert.embedded import embedded_checkpoint

        return embedded_checkpoint()
    return tiny_checkpoint(family)


@pytest.fixture(scope="module")
def f32_ggufs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("f32")
    paths = {}
    for family in FAMILIES:
        paths[family] = out / f"{family}-F32.gguf"
        convert_checkpoint(_checkpoint(family), paths[family], "F32")
    return paths


def _llama(path: Path, **kwargs):
    from llama_cpp import Llama

    # an F32 KV cache, so that the comparison measures the conversion, not the cache's f16 rounding
    return Llama(str(path), n_ctx=256, n_batch=256, n_threads=2, verbose=False, type_k=0, type_v=0, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_logits_match_transformers(family, f32_ggufs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _checkpoint(family)
    tokens = AutoTokenizer.from_pretrained(folder).encode(PROMPT)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].numpy()

    llm = _llama(f32_ggufs[family], logits_all=True)
    llm.eval(tokens)
    got = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)

    rel = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"{family}: {len(tokens)} positions, max relative error {rel:.2e}")
    assert rel < 1e-4  # measured: a few 1e-6
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def _corpus(vocab: str) -> list[str]:
    inp = (llama_cpp_source() / "models" / f"ggml-vocab-{vocab}.gguf.inp").read_text(encoding="utf-8")
    texts = [t for t in inp.split("\n__ggml_vocab_test__\n") if t.strip("\n") or t]
    return texts + [
        PROMPT,
        "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>2+2?<｜Assistant｜><think>\n4</think>\n\n**4**<｜end▁of▁sentence｜>",
        "Solve $x^2 - 5x + 6 = 0$. Please reason step by step, and put your final answer within \\boxed{}.",
        "def f(x):\n\treturn x ** 2  # 平方\n\n\n    print(f(3))",
        "Ünïcödé — «quotes» … 😀👍🏽 naïve café 東京 Привет мир 12345678901234567890",
        "   leading spaces and trailing   \n\n\n",
    ]


@pytest.mark.parametrize(("family", "vocab"), [("qwen2", "qwen2"), ("llama", "llama-bpe")])
def test_llama_cpp_tokenizes_like_hf(family, vocab, f32_ggufs):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(_checkpoint(family))
    llm = _llama(f32_ggufs[family], vocab_only=True)
    corpus = _corpus(vocab)
    mismatches = [text for text in corpus
                  if llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) != hf.encode(text)]
    print(f"{family}: {len(corpus)} texts, {len(mismatches)} mismatches")
    assert not mismatches, mismatches[:3]
