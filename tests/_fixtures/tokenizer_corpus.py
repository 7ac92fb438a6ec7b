"""A varied text corpus, and a check that an exported tokenizer.json tokenizes it as llama.cpp does."""
from __future__ import annotations

from pathlib import Path

SEPARATOR = "\n__ggml_vocab_test__\n"

NON_LATIN = [
    "机器学习是人工智能的一个分支。深度学习使用多层神经网络。",
    "東京は日本の首都です。カタカナとひらがな、そして漢字。",
    "한국어 문장은 띄어쓰기를 사용합니다. 안녕하세요!",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "مرحبا بالعالم. اللغة العربية تكتب من اليمين إلى اليسار.",
    "नमस्ते दुनिया। हिन्दी देवनागरी लिपि में लिखी जाती है।",
    "Γειά σου Κόσμε! Ελληνικά γράμματα: αβγδε ΑΒΓΔΕ",
    "שלום עולם, זה משפט בעברית.",
    "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "Emoji 🦙🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵, math ∀x∈ℝ: x²≥0, currency €£¥₹",
    "Zażółć gęślą jaźń. Füße, Straße, naïve café, Ærøskøbing, İstanbul.",
    "Numbers: 3.14159, 1,000,000, 0x1F, 1e-10, 2024-01-31T12:00:00Z, 12345678901234567890",
    "Tabs\tand\t\tspaces   and\n\nnewlines\r\nand trailing spaces   ",
]

CODE = [
    'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n',
    "#include <stdio.h>\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) printf(\"%d\\n\", i * i);\n\treturn 0;\n}\n",
    "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name HAVING n > 1 ORDER BY n DESC;",
    "const f = async (x) => { await fetch(`/api/${x}?q=1&r=2`); return x ?? null; };",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * 2).collect(); println!(\"{:?}\", v); }",
    "<html><body><div class=\"a\">Hello &amp; welcome</div></body></html>",
    '{"key": [1, 2.5, "three", null, true], "nested": {"a": {"b": []}}}',
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is 17 × 23? Please reason step by step."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a haiku about the sea."},
     {"role": "assistant", "content": "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time."},
     {"role": "user", "content": "Now one in French, s'il vous plaît."}],
    [{"role": "user", "content": "Translate to Chinese: good morning"},
     {"role": "assistant", "content": "<think>\nSimple greeting.\n</think>\n\n早上好"},
     {"role": "user", "content": "和日语呢？"}],
]


def inp_strings(llama_cpp_source: Path) -> list[str]:
    """Every test string of llama.cpp's ggml-vocab-*.gguf.inp files."""
    texts: list[str] = []
    for path in sorted((llama_cpp_source / "models").glob("ggml-vocab-*.gguf.inp")):
        texts += path.read_text(encoding="utf-8").split(SEPARATOR)
    return texts


def code_from_tree(llama_cpp_source: Path) -> list[str]:
    texts = []
    for rel in ("convert_hf_to_gguf.py", "src/llama-vocab.cpp", "README.md"):
        path = llama_cpp_source / rel
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            texts += [text[i:i + 2000] for i in range(0, min(len(text), 20000), 2000)]
    return texts


def corpus(llama_cpp_source: Path, hf_tokenizer) -> list[str]:
    texts = inp_strings(llama_cpp_source) + NON_LATIN + CODE + code_from_tree(llama_cpp_source)
    if hf_tokenizer.chat_template:
        for messages in CONVERSATIONS:
            texts.append(hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            texts.append(hf_tokenizer.apply_chat_template(messages, tokenize=False))
    return list(dict.fromkeys(texts))  # drop duplicates, keep order


def compare_tokenizers(hf_folder: Path, gguf_path: Path, texts: list[str], auto: bool = True) -> tuple[int, list[tuple]]:
    """Tokenize `texts` with transformers (the exported folder) and llama.cpp (the GGUF), both adding the special
    tokens the vocabulary asks for and both matching special tokens written in the text.
    `auto`: load with AutoTokenizer (which may pick a model-specific class), else exactly tokenizer.json.
    Returns (number of texts, mismatches as (text, llama.cpp ids, transformers ids))."""
    import llama_cpp
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = (AutoTokenizer if auto else PreTrainedTokenizerFast).from_pretrained(hf_folder)
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    bad = []
    try:
        for text in texts:
            ref = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            got = tok.encode(text, add_special_tokens=True)
            if ref != got:
                bad.append((text, ref, got))
    finally:
        llm.close()
    return len(texts), bad
