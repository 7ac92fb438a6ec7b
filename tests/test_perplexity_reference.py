"""quantkit's perplexity against a reference that shares nothing with it: the token stream of the Hugging Face
tokenizer (tokenizer.json, through transformers) and the NLL of transformers' forward pass in float32 on the
checkpoint that quantkit converted to an F32 GGUF — llama-perplexity's method written out again here: the text
tokenized once with BOS, cut into chunks of n_ctx, each chunk's first token made BOS, positions n_ctx/2 …
n_ctx−2 scored, each predicting the next token."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quantkit.measure.perplexity
from quantkit.convert import convert
from quantkit.measure.texts import read_text
from quantkit.measure.perplexity import Settings, perplexity
from tests._fixtures.texts import english_text
from reference.tiny import SPECS, tiny_checkpoint

pytestmark = pytest.mark.slow

N_CTX, N_BATCH, CHUNKS = 64, 128, 4  # two chunks per decode, two decodes


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint folder, its F32 GGUF made by quantkit)."""
    folder = tiny_checkpoint("qwen2")
    result = convert(folder, tmp_path_factory.mktemp("f32"), outtype="F32")
    return folder, result.base.path


@pytest.fixture(scope="module")
def text() -> bytes:
    return read_text(english_text(8_000))


def hf_tokens(folder: Path, text: bytes) -> np.ndarray:
    from transformers import AutoTokenizer

    return np.array(AutoTokenizer.from_pretrained(folder)(text.decode("utf-8"))["input_ids"])


def hf_nll(folder: Path, tokens: np.ndarray, n_ctx: int, n_chunks: int, bos: int) -> np.ndarray:
    """NLL of every scored position, llama-perplexity's way, from transformers' float32 logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    first = n_ctx // 2
    out = []
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        chunk[0] = bos
        with torch.no_grad():
            logits = model(torch.tensor(chunk[None])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1).numpy()
        targets = chunk[first + 1:]
        out.append(-logp[np.arange(first, n_ctx - 1), targets])
    return np.concatenate(out)


def test_token_stream_is_the_hf_tokenizers(qwen2, text, monkeypatch):
    """The stream quantkit scores is the one transformers makes of the text: BOS first, nothing dropped."""
    folder, gguf = qwen2
    seen = []
    real = quantkit.measure.perplexity.evaluate

    def spy(model, info, tokens, plan, *args, **kwargs):
        seen.append(np.array(tokens))
        return real(model, info, tokens, plan, *args, **kwargs)

    monkeypatch.setattr(quantkit.measure.perplexity, "evaluate", spy)
    perplexity([gguf], text, Settings(n_ctx=N_CTX, n_batch=N_BATCH, chunks=CHUNKS, threads=2, n_gpu_layers=0))
    expected = hf_tokens(folder, text)
    assert expected[0] == SPECS["qwen2"].bos
    [tokens] = seen
    assert len(tokens) == len(expected) and (tokens == expected).all()


def test_ppl_matches_transformers(qwen2, text):
    folder, gguf = qwen2
    [r] = perplexity([gguf], text, Settings(n_ctx=N_CTX, n_batch=N_BATCH, chunks=CHUNKS, threads=2, n_gpu_layers=0))
    tokens = hf_tokens(folder, text)
    nll = hf_nll(folder, tokens, N_CTX, CHUNKS, SPECS["qwen2"].bos)
    n = len(nll)
    ppl = float(np.exp(nll.mean()))
    err = ppl * float(nll.std()) / np.sqrt(n - 1)
    assert r.n_chunks == CHUNKS and r.n_scored == n == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    print(f"PPL quantkit {r.ppl:.6f} ± {r.ppl_err:.6f}, transformers {ppl:.6f} ± {err:.6f}")
    # llama.cpp keeps its KV cache in f16, transformers in f32: that is all that separates the two
    assert r.ppl == pytest.approx(ppl, rel=5e-5)  # measured: 9e-6
    assert r.ppl_err == pytest.approx(err, rel=1e-3)  # measured: 1.4e-4
    # the check can fail: the same text scored one token later is far off
    shifted = hf_nll(folder, tokens[1:], N_CTX, CHUNKS, SPECS["qwen2"].bos)
    assert abs(np.exp(shifted.mean()) / ppl - 1) > 100 * 5e-5
