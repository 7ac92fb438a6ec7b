"""A random-weight Hugging Face checkpoint with DeepSeek-R1-Distill-Qwen-1.5B's shapes, written with numpy alone
(no torch, no safetensors package): config.json, generation_config.json, the tokenizer files copied from a folder
made by gpu_prepare.sh (the tiny R1 Qwen tokenizer of reference/tiny.py), and one bf16 model.safetensors.

    python benchmarks/gpu_model.py OUT_DIR --tokenizer DIR [--layers N]

--layers below 28 keeps every width and cuts the depth (the CPU mode of gpu.sh). Never imported by the package.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

# DeepSeek-R1-Distill-Qwen-1.5B's config.json (the shapes; rope and ids as in the real repo)
R1_QWEN_1_5B = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", hidden_size=1536,
    intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    max_position_embeddings=131072, max_window_layers=21, rms_norm_eps=1e-6, rope_theta=10000.0,
    sliding_window=4096, use_sliding_window=False, tie_word_embeddings=False, vocab_size=151936,
    bos_token_id=151646, eos_token_id=151643, torch_dtype="bfloat16", attention_dropout=0.0, use_cache=True,
    initializer_range=0.02,
)
GENERATION = dict(bos_token_id=151646, eos_token_id=151643, do_sample=True, temperature=0.6, top_p=0.95)


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    shapes = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
            (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
        ]
    return shapes + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def _bf16(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_safetensors(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """bf16 tensors: matrices N(0, 0.02²) drawn from one 16M-value pool at random offsets (fast, and no two
    tensors alike), norms 1, biases N(0, 0.02²). Returns the file's size."""
    rng = np.random.default_rng(seed)
    pool = _bf16(rng.standard_normal(1 << 24, dtype=np.float32) * 0.02)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, shape in shapes:
            count = int(np.prod(shape))
            if name.endswith("norm.weight"):
                f.write(_bf16(np.ones(count, dtype=np.float32)).tobytes())
                continue
            start = int(rng.integers(0, pool.size))
            reps = -(-(start + count) // pool.size)
            f.write(np.tile(pool, reps)[start:start + count].tobytes() if reps > 1 else pool[start:start + count].tobytes())
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer", type=Path, required=True, help="folder with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--layers", type=int, default=R1_QWEN_1_5B["num_hidden_layers"])
    args = ap.parse_args()
    cfg = dict(R1_QWEN_1_5B, num_hidden_layers=args.layers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (args.out / "generation_config.json").write_text(json.dumps(GENERATION, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(args.tokenizer / name, args.out / name)
    size = write_safetensors(args.out / "model.safetensors", tensor_shapes(cfg))
    params = sum(int(np.prod(s)) for _, s in tensor_shapes(cfg))
    print(json.dumps({"folder": str(args.out), "layers": args.layers, "params": params, "bytes": size}))


if __name__ == "__main__":
    main()
