"""A scripted R1-Distill-Qwen GGUF: a tiny model whose generation through libllama is known in advance.

The checkpoint is a one-layer Qwen2ForCausalLM (hidden size 64) with the real DeepSeek-R1-Distill-Qwen tokenizer
(reference/tiny.py's QWEN2), written with numpy + safetensors and converted by quantkit's own converter
(`quantkit.convert.convert`, BF16). Its weights make the next token depend on the current token only:

- the attention output projection and the MLP down projection are zero, so the residual stream is the token's
  embedding; q/k/v and their biases are zero too, the norms one;
- each token that has a successor embeds to its own one-hot dimension, every other token to zero;
- `lm_head` maps that dimension to a logit of MARGIN (≈ 40) for the successor and 0 for every other token,
  so greedy decoding and R1's sampling (temperature 0.6, top-p 0.95 after top-k 40, any seed) both follow
  the script.

The successor table (`SUCCESSORS`, token id → next token id), built from three chains whose tokens are distinct:

- the R1 reply: `<｜Assistant｜>` → `<think>` → "\\n" → THOUGHT's tokens → `</think>` → "\\n\\n" → ANSWER's
  tokens → EOS (`<｜end▁of▁sentence｜>`, 151643). A chat prompt ends with `<｜Assistant｜><think>\\n` (its last
  token is "\\n", id 198), so chat generates THOUGHT, `</think>`, "\\n\\n", ANSWER, then EOS; a raw completion of
  a prompt ending with `<｜Assistant｜>` generates RAW_TEXT (the same, after the model's own `<think>\\n`).
- SHORT: a raw prompt ending with " hello" generates " world!" then EOS (2 tokens).
- LOOP: a raw prompt ending with " ping" generates " pong ping pong ping …" until max_tokens (`loop_text(n)`).

Two variants, with the same weights and different chat templates (`scripted_gguf(variant)`):

- "think": llama.cpp's copy of the DeepSeek-R1-Distill-Qwen-32B template (models/templates in the sdist), whose
  generation prompt ends with `<｜Assistant｜><think>\\n`: the model never has to emit `<think>` itself.
- "bare": the same template with its generation prompt cut back to `<｜Assistant｜>` (R1's template as first
  published); quantkit's chat then appends `<think>\\n` itself (templates.ChatTemplate.prompt).

Both give the same chat prompt tokens, so chat gives in both, greedy or sampled (EOS not counted, as in
GenerationResult):

    reasoning == THOUGHT == "Okay, doubling two gives four. I am sure of it.\\n"
    answer == ANSWER == "The answer is \\\\boxed{4}."
    text == TEXT == THOUGHT + "</think>\\n\\n" + ANSWER
    reasoning_tokens == REASONING_TOKENS == 14  (THOUGHT's 13 tokens and `</think>`)
    answer_tokens == ANSWER_TOKENS == 9         ("\\n\\n" and ANSWER's 8 tokens)
    finish_reason == "stop";  history_text == "\\n\\n" + ANSWER (what turn 2's prompt keeps of turn 1)
    with max_tokens=n inside the thought: reasoning == "".join(THOUGHT_PIECES[:n]), finish_reason "length"

Only a prompt's last token decides the reply, so every chat turn (the second one too) gives the same script. A
prompt ending with any token outside the table sees all-zero logits: its output is arbitrary.

A third variant, "loop", has the "think" template and other weights: its thought goes on and repeats itself. After
`<think>\n` it generates "Wait, let me check that again." and then " Wait, let me check that again." forever
(LOOP_THOUGHT_IDS, then LOOP_CYCLE_IDS over and over: `loop_thought(n)` is its first n tokens' text); once a
`</think>\n\n` is forced into it, ANSWER and EOS follow, as in the other variants. The loop guard (32-token span,
3 times) fires at its thought token LOOP_FIRES_AT == 49: the span starting at the second token recurs 8 and 16
tokens later. A reasoning budget of n on it gives `loop_thought(n)` and the closing text, then ANSWER.

The "bare" template is llama.cpp's with
`{{'<｜Assistant｜><think>\\n'}}{% if not enable_thinking %}{{- '</think>' -}}{% endif %}` replaced by
`{{'<｜Assistant｜>'}}` (`bare_template`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from reference.cache import cached_dir
from reference.tiny import QWEN2, _write_tokenizer

VERSION = "v1"
VARIANTS = ("think", "bare")  # the scripted reply (THOUGHT, then ANSWER)
LOOP = "loop"  # the thought that never ends and repeats itself
NAME = "Scripted-R1-Distill-Qwen"
HIDDEN = 64
MARGIN = 40.0  # logit of the successor; every other token gets 0

EOS_ID = 151643
ASSISTANT, THINK, END_THINK = "<｜Assistant｜>", "<think>", "</think>"

THOUGHT = "Okay, doubling two gives four. I am sure of it.\n"
ANSWER = "The answer is \\boxed{4}."
TEXT = THOUGHT + END_THINK + "\n\n" + ANSWER  # what chat generates after `<think>\n` (EOS not included)
RAW_TEXT = THINK + "\n" + TEXT  # what a raw prompt ending with `<｜Assistant｜>` generates

# the ids the DeepSeek-R1-Distill-Qwen tokenizer gives these texts (checked when the model is built, and against
# libllama's tokenizer in tests/test_scripted_chat.py)
THOUGHT_IDS = (32313, 11, 59015, 1378, 6696, 3040, 13, 358, 1079, 2704, 315, 432, 624)
ANSWER_IDS = (785, 4226, 374, 1124, 79075, 90, 19, 7810)
THOUGHT_PIECES = ("Okay", ",", " doubling", " two", " gives", " four", ".", " I", " am", " sure", " of", " it", ".\n")
ANSWER_PIECES = ("The", " answer", " is", " \\", "boxed", "{", "4", "}.")
IDS = {ASSISTANT: 151645, THINK: 151648, "\n": 198, END_THINK: 151649, "\n\n": 271}
TEXT_IDS = (*THOUGHT_IDS, IDS[END_THINK], IDS["\n\n"], *ANSWER_IDS)  # chat's generated tokens, EOS excluded
RAW_IDS = (IDS[THINK], IDS["\n"], *TEXT_IDS)  # what a raw prompt ending with `<｜Assistant｜>` generates
REASONING_TOKENS = len(THOUGHT_IDS) + 1  # the thought and `</think>`
ANSWER_TOKENS = 1 + len(ANSWER_IDS)  # "\n\n" and the answer

SHORT_PROMPT, SHORT_TEXT = "Say hello", " world!"  # " hello" → " world" → "!" → EOS
SHORT_IDS = (23811, 1879, 0)  # " hello", " world", "!"
LOOP_PROMPT = "Keep going: ping"  # " ping" → " pong" → " ping" → … forever
LOOP_PIECES = (" pong", " ping")
LOOP_IDS = (29998, 77622)  # " ping", " pong"


# the loop variant's thought: "Wait" once, then the cycle " Wait, let me check that again." over and over
LOOP_THOUGHT_IDS = (14190, 11, 1077, 752, 1779, 429, 1549, 13)
LOOP_THOUGHT_PIECES = ("Wait", ",", " let", " me", " check", " that", " again", ".")
LOOP_CYCLE_IDS = (13824, *LOOP_THOUGHT_IDS[1:])
LOOP_CYCLE_PIECES = (" Wait", *LOOP_THOUGHT_PIECES[1:])
LOOP_FIRES_AT = 1 + 32 + 2 * len(LOOP_CYCLE_IDS)  # the span from token 2 on, the third time: 49


def loop_thought_ids(n: int) -> tuple[int, ...]:
    """The first n tokens of the loop variant's thought."""
    first = len(LOOP_THOUGHT_IDS)
    return tuple(LOOP_THOUGHT_IDS[i] if i < first else LOOP_CYCLE_IDS[(i - first) % len(LOOP_CYCLE_IDS)]
                 for i in range(n))


def loop_thought(n: int) -> str:
    """The text of the loop variant's first n thought tokens."""
    pieces = dict(zip(LOOP_CYCLE_IDS, LOOP_CYCLE_PIECES)) | dict(zip(LOOP_THOUGHT_IDS, LOOP_THOUGHT_PIECES))
    return "".join(pieces[t] for t in loop_thought_ids(n))


def loop_text(n: int) -> str:
    """What LOOP_PROMPT generates in `n` tokens."""
    return "".join(LOOP_PIECES[i % 2] for i in range(n))


def _chains(variant: str = "think") -> list[list[int]]:
    others = [[*SHORT_IDS, EOS_ID], [*LOOP_IDS, LOOP_IDS[0]]]
    if variant == LOOP:
        thought = [IDS[ASSISTANT], IDS[THINK], IDS["\n"], *LOOP_THOUGHT_IDS, *LOOP_CYCLE_IDS, LOOP_CYCLE_IDS[0]]
        answer = [IDS[END_THINK], IDS["\n\n"], *ANSWER_IDS, EOS_ID]
        return [thought, answer, *others]
    return [[IDS[ASSISTANT], IDS[THINK], IDS["\n"], *TEXT_IDS, EOS_ID], *others]


def successors(variant: str = "think") -> dict[int, int]:
    """token id → the id the model of `variant` generates after it."""
    table: dict[int, int] = {}
    for chain in _chains(variant):
        for token, nxt in zip(chain, chain[1:]):
            if table.setdefault(token, nxt) != nxt:
                raise AssertionError(f"token {token} would need two successors ({table[token]}, {nxt})")
    return table


SUCCESSORS = successors()


def bare_template(source: str) -> str:
    """The R1 template with its generation prompt cut back to `<｜Assistant｜>` (no `<think>\\n`)."""
    opened = "{{'<｜Assistant｜><think>\\n'}}{% if not enable_thinking %}{{- '</think>' -}}{% endif %}"
    if source.count(opened) != 1:
        raise AssertionError("the R1-Distill-Qwen template's generation prompt is not where it was")
    return source.replace(opened, "{{'<｜Assistant｜>'}}")


def scripted_gguf(variant: str = "think") -> Path:
    """The cached scripted GGUF of `variant` ("think", "bare" or "loop")."""
    if variant not in (*VARIANTS, LOOP):
        raise ValueError(f"variant must be one of {(*VARIANTS, LOOP)}, not {variant!r}")
    folder = cached_dir(f"scripted-{variant}-{VERSION}", lambda tmp: _build(variant, tmp))
    return folder / f"{NAME}-BF16.gguf"


def _build(variant: str, folder: Path) -> None:
    from quantkit.convert import convert

    checkpoint = folder / NAME
    shutil.copytree(_tokenizer(), checkpoint, ignore=shutil.ignore_patterns(".complete"))
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    if variant == "bare":
        config["chat_template"] = bare_template(config["chat_template"])
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
    if variant == LOOP:
        _check_loop_ids(checkpoint / "tokenizer.json")
    _write_config(checkpoint)
    _write_weights(checkpoint / "model.safetensors", successors(variant))
    convert(checkpoint, folder, outtype="BF16")
    shutil.rmtree(checkpoint)


def _tokenizer() -> Path:
    """tokenizer.json and tokenizer_config.json of R1-Distill-Qwen (with llama.cpp's copy of its template),
    made once for both variants: reading the vocab GGUF is most of the build's time."""

    def build(tmp: Path) -> None:
        _write_tokenizer(QWEN2, tmp)
        _check_ids(tmp / "tokenizer.json")

    return cached_dir(f"scripted-tokenizer-{VERSION}", build)


def _check_ids(tokenizer_json: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    planned = {THOUGHT: THOUGHT_IDS, ANSWER: ANSWER_IDS, TEXT: TEXT_IDS, RAW_TEXT: RAW_IDS,
               SHORT_PROMPT + SHORT_TEXT: (45764, *SHORT_IDS),
               LOOP_PROMPT + loop_text(3): (19434, 2087, 25, *LOOP_IDS, *LOOP_IDS),
               ASSISTANT + THINK + "\n": (IDS[ASSISTANT], IDS[THINK], IDS["\n"])}
    for text, ids in planned.items():
        got = tuple(tok.encode(text, add_special_tokens=False).ids)
        if got != ids:
            raise AssertionError(f"{text!r} tokenizes to {got}, not {ids}")
    for piece, token in zip(THOUGHT_PIECES + ANSWER_PIECES, THOUGHT_IDS + ANSWER_IDS):
        if tok.decode([token]) != piece:
            raise AssertionError(f"token {token} decodes to {tok.decode([token])!r}, not {piece!r}")


def _check_loop_ids(tokenizer_json: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    text = loop_thought(24)
    if tuple(tok.encode(text, add_special_tokens=False).ids) != loop_thought_ids(24):
        raise AssertionError(f"{text!r} does not tokenize to {loop_thought_ids(24)}")


def _write_config(folder: Path) -> None:
    config = dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=QWEN2.vocab_size, hidden_size=HIDDEN,
        intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6, hidden_act="silu",
        tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096, max_window_layers=1,
        bos_token_id=QWEN2.bos, eos_token_id=QWEN2.eos, torch_dtype="float32", attention_dropout=0.0,
        initializer_range=0.02, use_cache=True,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = dict(bos_token_id=QWEN2.bos, eos_token_id=QWEN2.eos, do_sample=True, temperature=0.6, top_p=0.95)
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _write_weights(path: Path, table: dict[int, int], forks: dict[int, dict[int, float]] | None = None) -> None:
    """`table`: token → its one successor (logit MARGIN); `forks`: token → {successor: logit} (several)."""
    from safetensors.numpy import save_file

    n_vocab, d, ff, head_dim = QWEN2.vocab_size, HIDDEN, 128, HIDDEN // 2
    embed = np.zeros((n_vocab, d), dtype=np.float32)
    lm_head = np.zeros((n_vocab, d), dtype=np.float32)
    logits = {token: {nxt: MARGIN} for token, nxt in table.items()} | (forks or {})
    # RMSNorm turns a one-hot embedding into sqrt(d) on its dimension: scale lm_head so the logit is MARGIN
    for dim, (token, successors) in enumerate(logits.items()):
        embed[token, dim] = 1.0
        for nxt, logit in successors.items():
            lm_head[nxt, dim] = logit / np.sqrt(d)
    p = "model.layers.0."
    zeros = np.zeros
    tensors = {
        "model.embed_tokens.weight": embed,
        p + "input_layernorm.weight": np.ones(d, np.float32),
        p + "self_attn.q_proj.weight": zeros((d, d), np.float32),
        p + "self_attn.q_proj.bias": zeros(d, np.float32),
        p + "self_attn.k_proj.weight": zeros((head_dim, d), np.float32),
        p + "self_attn.k_proj.bias": zeros(head_dim, np.float32),
        p + "self_attn.v_proj.weight": zeros((head_dim, d), np.float32),
        p + "self_attn.v_proj.bias": zeros(head_dim, np.float32),
        p + "self_attn.o_proj.weight": zeros((d, d), np.float32),
        p + "post_attention_layernorm.weight": np.ones(d, np.float32),
        p + "mlp.gate_proj.weight": zeros((ff, d), np.float32),
        p + "mlp.up_proj.weight": zeros((ff, d), np.float32),
        p + "mlp.down_proj.weight": zeros((d, ff), np.float32),
        "model.norm.weight": np.ones(d, np.float32),
        "lm_head.weight": lm_head,
    }
    save_file(tensors, str(path), metadata={"format": "pt"})



# ---- a fork: one position with two near-equal successors (the statistical test of speculative decoding) ------

FORK_TEMPERATURE = 0.6  # R1's
# After FORK_AT, FORK_LIKELY has logit 24 and FORK_OTHER 24 − 1/8: lm_head entries 3 and 3 − 1/64, exact in BF16
# (whose step is 1/64 in [2, 4)), times the normed one-hot 8 (also exact in BF16, as ggml's BF16 dot product
# rounds it). Every other token has logit 0: outside top-k and top-p, and e^-40 of the mass at temperature 0.6.
FORK_LOGIT, FORK_GAP = 24.0, 0.125
FORK_P = 1 / (1 + float(np.exp(-FORK_GAP / FORK_TEMPERATURE)))  # p(FORK_LIKELY) ≈ 0.5519; FORK_OTHER: 1 − FORK_P
# " red" → " green" → " blue" → (" cat" → " sun" | " dog" → " moon") → EOS
FORK_IDS = {" red": 2518, " green": 6176, " blue": 6303, " cat": 8251, " dog": 5562, " sun": 7015, " moon": 17788}
FORK_AT, FORK_LIKELY, FORK_OTHER = FORK_IDS[" blue"], FORK_IDS[" cat"], FORK_IDS[" dog"]
FORK_TEXTS = (" green blue cat sun", " green blue dog moon")  # what a prompt ending with " red" generates
FORK_VERSION = "v2"


def fork_gguf() -> Path:
    """The cached fork model (BF16): the scripted model's tokenizer and layout, with the fork above."""
    return cached_dir(f"scripted-fork-{FORK_VERSION}", _build_fork) / f"{NAME}-BF16.gguf"


def _build_fork(folder: Path) -> None:
    from tokenizers import Tokenizer

    from quantkit.convert import convert

    checkpoint = folder / NAME
    shutil.copytree(_tokenizer(), checkpoint, ignore=shutil.ignore_patterns(".complete"))
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    for word, token in FORK_IDS.items():
        if tok.encode(word, add_special_tokens=False).ids != [token]:
            raise AssertionError(f"{word!r} is not the one token {token}")
    ids = FORK_IDS
    table = {ids[" red"]: ids[" green"], ids[" green"]: ids[" blue"], ids[" cat"]: ids[" sun"], ids[" sun"]: EOS_ID,
             ids[" dog"]: ids[" moon"], ids[" moon"]: EOS_ID}
    forks = {FORK_AT: {FORK_LIKELY: FORK_LOGIT, FORK_OTHER: FORK_LOGIT - FORK_GAP}}
    _write_config(checkpoint)
    _write_weights(checkpoint / "model.safetensors", table, forks)
    convert(checkpoint, folder, outtype="BF16")
    shutil.rmtree(checkpoint)


# ---- a thought under control (engine/thinking.py): what a budget and the loop guard make of the script ----------

def closing_tokens(message: str | None = None) -> int:
    """How many tokens the engine forces to close a thought with `message` (default: the engine's): the message,
    `</think>` and "\n\n". A budget of n on the reply then gives n + closing_tokens() - 1 thought tokens (the
    message and `</think>`), and ANSWER_TOKENS answer tokens."""
    from tokenizers import Tokenizer

    from quantkit.engine.thinking import BUDGET_MESSAGE, closing_text

    tok = Tokenizer.from_file(str(_tokenizer() / "tokenizer.json"))
    text = closing_text(BUDGET_MESSAGE if message is None else message)
    return len(tok.encode(text, add_special_tokens=False).ids)
