"""`export` on the real SmolLM2-135M-Instruct Q4_1 GGUF, checked against independent implementations:
transformers' forward pass on the exported checkpoint against llama.cpp's on the original GGUF, and
transformers' tokenizer on the exported tokenizer.json against llama.cpp's tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from quantkit.convert.export import export_gguf
from tests._fixtures.llama_reference import reference_llama
from tests._fixtures.tiny_gguf_models import llama_cpp_permute
from tests._fixtures.tokenizer_corpus import compare_tokenizers, corpus

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

PROSE = """\
The lighthouse keeper had lived on the island for nearly thirty years, and in that time he had learned to read
the sea the way other people read the morning newspaper. A grey swell from the west meant rain by evening; a
flat, glassy calm in autumn usually came before a storm. Every night he climbed the one hundred and twelve steps
to the lamp room, trimmed the wick, wound the clockwork that turned the great lens, and wrote a few lines in the
logbook: the wind, the weather, the ships that passed. Most of those entries were dull, and he liked them that
way. Once, in the winter of a hard year, a fishing boat lost its engine on the reef to the north. He saw its
lights go out, rowed across in the dark with a rope and a lantern, and brought four frightened men back to the
kitchen, where his wife made tea and dried their coats by the stove. They sent a letter every Christmas after
that. When the lighthouse was finally automated, an engineer from the mainland came to install the new
equipment. It was smaller than a suitcase and needed no one to climb the stairs. The keeper watched the
engineer work, asked sensible questions about batteries and sensors, and then went downstairs to pack. He did
not complain. He said only that a machine could keep a light burning, but it could not row a boat, and that
somebody ought to remember the difference. He moved to a small house in the harbour town, where he could still
see the beam sweep across the water at night, and he kept writing in a notebook every evening, out of habit:
the wind, the weather, the ships that passed.
"""


@pytest.fixture(scope="module")
def exported(smollm2_gguf, tmp_path_factory):
    return export_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "hf", dtype="f32")


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    """llama.cpp's tokens and next-token logits for PROSE on the original Q4_1 GGUF."""
    llm = reference_llama(smollm2_gguf, n_ctx=1024, n_batch=512, logits_all=True, n_threads=2)
    tokens = llm.tokenize(PROSE.encode(), add_bos=True)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    llm.close()
    return tokens, logits


def _agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Share of positions with the same top token, and mean KL(llama.cpp ‖ transformers) in nats."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return float((ref.argmax(-1) == got.argmax(-1)).mean()), float(kl.mean())


def _transformers_logits(model, tokens: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].double().numpy()


def test_export_writes_a_checkpoint(exported):
    assert exported.architecture == "llama" and exported.dtype == "f32" and exported.n_tensors == 272
    config = json.loads((exported.out_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (30, 576, 9, 3, 49152)
    assert config["tie_word_embeddings"] is True
    assert "chat_template" in json.loads((exported.out_dir / "tokenizer_config.json").read_text())
    print(f"\nSmolLM2 f32 export: {exported.total_bytes / 2**20:.0f} MiB in {exported.seconds:.1f} s")


def test_next_token_distribution_matches_llama_cpp(exported, reference):
    tokens, ref = reference
    assert len(tokens) > 300
    model = transformers.AutoModelForCausalLM.from_pretrained(exported.out_dir, dtype=torch.float32)
    top1, kl = _agreement(ref, _transformers_logits(model, tokens))
    print(f"\nSmolLM2 Q4_1, {len(tokens)} tokens of prose: top-1 agreement {top1:.1%}, mean KL {kl:.5f} nats")
    assert top1 >= 0.90
    assert kl < 0.02


def test_a_wrong_qk_layout_is_caught(exported, reference):
    """Negative control: leave q/k in llama.cpp's order and the same check must fail by a wide margin."""
    tokens, ref = reference
    model = transformers.AutoModelForCausalLM.from_pretrained(exported.out_dir, dtype=torch.float32)
    config = model.config
    with torch.no_grad():
        for layer in model.model.layers:
            q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
            q.copy_(torch.from_numpy(llama_cpp_permute(q.numpy(), config.num_attention_heads)))
            k.copy_(torch.from_numpy(llama_cpp_permute(k.numpy(), config.num_key_value_heads)))
    top1, kl = _agreement(ref, _transformers_logits(model, tokens))
    print(f"\nnegative control (q/k left permuted): top-1 agreement {top1:.1%}, mean KL {kl:.3f} nats")
    assert top1 < 0.5 and kl > 0.5


def test_tokenizer_matches_llama_cpp(exported, smollm2_gguf, llama_cpp_source):
    texts = corpus(llama_cpp_source, transformers.AutoTokenizer.from_pretrained(exported.out_dir))
    n, bad = compare_tokenizers(exported.out_dir, smollm2_gguf, texts)
    print(f"\nSmolLM2 tokenizer: {n} texts, {len(bad)} mismatches")
    assert not bad, bad[:3]
