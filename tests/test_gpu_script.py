"""benchmarks/gpu.sh, the CUDA check of issue #17: its scripts parse, the trimmed llama.cpp tree that travels to the
device keeps what a CUDA build of the tools needs and stays small, the generated checkpoint has
R1-Distill-Qwen-1.5B's parameter count, and (when asked, or when llama.cpp's CPU tools are already built) the whole
check runs end to end in its CPU mode."""
from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_model, gpu_prepare

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path.home() / ".cache" / "quantkit-bench" / "llama.cpp-0.3.36-build" / "bin"


@pytest.mark.parametrize("script", ["gpu.sh", "gpu_prepare.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


@pytest.mark.parametrize("path, kept", [
    ("CMakeLists.txt", True),
    ("ggml/src/ggml-cuda/mmq.cu", True),
    ("ggml/src/ggml-cuda/template-instances/fattn-vec-instance-f16-f16.cu", True),
    ("ggml/src/ggml-cpu/ggml-cpu.c", True),
    ("tools/server/server.cpp", True),
    ("tools/llama-bench/llama-bench.cpp", True),
    ("models/ggml-vocab-qwen2.gguf", False),
    ("models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", False),
    ("tests/test-backend-ops.cpp", False),
    ("docs/build.md", False),
    ("examples/simple/simple.cpp", False),
    ("ggml/src/ggml-vulkan/ggml-vulkan.cpp", False),
    ("ggml/src/ggml-metal/ggml-metal.m", False),
    (".github/workflows/build.yml", False),
    ("tools/server/public/logo.png", False),
])
def test_trim_rules(path, kept):
    assert gpu_prepare.keep_llama_cpp(path) is kept


def test_trimmed_tree_has_every_cmake_subdirectory_and_fits(llama_cpp_source):
    """Every add_subdirectory() of a kept CMakeLists.txt that a CUDA build enters names a kept folder, and the
    trimmed source is far under the 64 MiB a device call carries (the dry-run's file list, from the sdist)."""
    from reference.sdist import _download

    with tarfile.open(_download()) as tar:
        kept = {dest: m.size for m, dest in gpu_prepare.sdist_members(tar)}
    assert sum(kept.values()) < 40 * 2**20
    assert "llama_cpp/llama_cpp.py" in kept and "llama_cpp/_ctypes_extensions.py" in kept
    folders = {str(Path(p).parent) for p in kept}
    off = {"tests", "examples", "pocs", "rpc", "tuning"}  # options a CUDA build of the tools leaves off
    for cmake in ("llama.cpp/CMakeLists.txt", "llama.cpp/tools/CMakeLists.txt", "llama.cpp/ggml/CMakeLists.txt"):
        assert cmake in kept
        text = (llama_cpp_source / cmake.removeprefix("llama.cpp/")).read_text()
        base = Path(cmake).parent
        for sub in re.findall(r"add_subdirectory\((\S+?)\)", text):
            if sub in off or "$" in sub:
                continue
            assert str(base / sub) in folders, f"{cmake} enters {sub}, which the trimmed tree dropped"
    assert "llama.cpp/ggml/src/ggml-cuda/CMakeLists.txt" in kept


def test_checkpoint_has_the_real_models_parameter_count(tmp_path):
    # DeepSeek-R1-Distill-Qwen-1.5B: 1,777,088,000 parameters (its model.safetensors index, bf16: 3.55 GB)
    shapes = gpu_model.tensor_shapes(gpu_model.R1_QWEN_1_5B)
    assert sum(int(np.prod(s)) for _, s in shapes) == 1_777_088_000
    assert len(shapes) == 2 + 28 * 12 + 1


def test_safetensors_file_reads_back(tmp_path):
    from safetensors.numpy import load_file

    cfg = dict(gpu_model.R1_QWEN_1_5B, hidden_size=64, intermediate_size=96, num_attention_heads=4,
               num_key_value_heads=2, num_hidden_layers=1, vocab_size=300)
    shapes = gpu_model.tensor_shapes(cfg)
    path = tmp_path / "model.safetensors"
    gpu_model.write_safetensors(path, shapes)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert json.loads(path.read_bytes()[8:8 + header_len])["lm_head.weight"]["dtype"] == "BF16"
    # bf16 as raw uint16: rewrite the dtype so numpy reads the bits
    raw = path.read_bytes()
    head = raw[8:8 + header_len].replace(b'"BF16"', b'"U16"\x20')
    tensors = load_file_bytes(raw[:8] + head + raw[8 + header_len:], load_file, tmp_path)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == dict(shapes)
    as_f32 = lambda a: (a.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    assert np.all(as_f32(tensors["model.norm.weight"]) == 1.0)
    w = as_f32(tensors["model.layers.0.mlp.up_proj.weight"])
    assert 0.015 < w.std() < 0.025 and abs(w.mean()) < 0.005


def load_file_bytes(data: bytes, load_file, tmp_path):
    p = tmp_path / "u16.safetensors"
    p.write_bytes(data)
    return load_file(p)


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get("QUANTKIT_GPU_SCRIPT") or all(
                        (TOOLS / t).exists() for t in ("llama-bench", "llama-perplexity", "llama-server"))),
                    reason="runs benchmarks/gpu.sh --cpu (builds llama.cpp's CPU tools first): set "
                           "QUANTKIT_GPU_SCRIPT=1, or build them with reference/llama_tools.py, to run it")
def test_cpu_mode_end_to_end(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"))
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu"], capture_output=True, text=True,
                       env=env, timeout=1800)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["check"]: r for r in results["rows"]}
    table = (tmp_path / "out" / "table.txt").read_text()
    assert p.stdout.rstrip().endswith(table.rstrip().splitlines()[-1]), p.stdout[-2000:]  # the table is last
    assert (tmp_path / "out" / "logs.tgz").exists()
    # the correctness rows (the speed rows depend on a shared CPU)
    for check in ("pytest -k 'gpu or offload'", "perplexity value", "-ngl auto layers on GPU", "estimate CPU total"):
        assert rows[check]["ok"], (check, rows[check], p.stdout[-3000:])
    assert {"pp64 Q4_K_M tok/s", "tg16 Q8_0 tok/s", "perplexity time (4×128)"} <= rows.keys()
