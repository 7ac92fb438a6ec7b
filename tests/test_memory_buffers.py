"""KV cache and compute buffer estimates against what llama.cpp reports when it loads the fixtures (CPU)."""
from __future__ import annotations

import re

import pytest

from quantkit.memory import estimate_memory
from quantkit.memory.buffers import runtime_memory
from quantkit.memory.shapes import resolve_target
from quantkit.runtime import capture as capture_llama_log
from tests._fixtures.memory import tiny_model

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp


def llama_cpp_buffers(path, n_ctx: int, flash: bool, n_ubatch: int = 512, kv_type: str = "f16") -> dict[str, float]:
    import llama_cpp

    ggml_type = {"f16": 1, "q8_0": 8, "q4_0": 2}[kv_type]
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    with capture_llama_log() as lines:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
        assert model
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads = n_ctx, 2048, n_ubatch, 1
        cp.flash_attn_type = 1 if flash else 0
        cp.type_k = cp.type_v = ggml_type
        ctx = llama_cpp.llama_init_from_model(model, cp)
        assert ctx
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    found = {}
    for line in lines:
        if m := re.search(r"llama_kv_cache: size =\s*([\d.]+) MiB", line):
            found["kv"] = float(m[1])
        if m := re.search(r"CPU compute buffer size =\s*([\d.]+) MiB", line):
            found["compute"] = float(m[1])
    return found


CASES = [("llama-32", 512, False), ("llama-32", 4096, True), ("llama-32", 4096, False), ("qwen2-28", 2000, True),
         ("qwen2-28", 8192, False), ("llama-16-tied", 1024, True), ("qwen2-64", 16384, True)]


@pytest.mark.parametrize("fixture,n_ctx,flash", CASES)
def test_kv_and_compute_match_llama_cpp(fixture, n_ctx, flash):
    path = tiny_model(fixture)
    rt = runtime_memory(resolve_target(str(path)), n_ctx, flash_attn=flash)
    real = llama_cpp_buffers(path, n_ctx, flash)
    assert rt.kv_bytes / 2**20 == pytest.approx(real["kv"], abs=0.01)  # exact (llama.cpp prints 2 decimals)
    assert rt.compute_bytes / 2**20 == pytest.approx(real["compute"], rel=0.10)


def test_smollm2_compute_and_quantized_kv(smollm2_gguf):
    """A real vocabulary (49152): the output phase dominates; q8_0 cache (needs flash attention)."""
    spec = resolve_target(str(smollm2_gguf))
    for n_ctx, flash, kv in ((512, False, "f16"), (4096, True, "q8_0"), (3000, True, "q4_0")):
        rt = runtime_memory(spec, n_ctx, kv_type=kv, flash_attn=flash)
        real = llama_cpp_buffers(smollm2_gguf, n_ctx, flash, kv_type=kv)
        assert rt.kv_bytes / 2**20 == pytest.approx(real["kv"], abs=0.01), (n_ctx, kv)
        assert rt.compute_bytes / 2**20 == pytest.approx(real["compute"], rel=0.10), (n_ctx, flash)


def test_kv_formula_for_the_family():
    # REFERENCE: n_layer × n_ctx × n_kv_heads × head_dim × 2 × bytes per element
    est = estimate_memory("8B", ["Q4_K_M"], n_ctx=4096)
    assert est.runtime.kv_bytes == 32 * 4096 * 8 * 128 * 2 * 2
    assert estimate_memory("70B", ["Q4_K_M"], n_ctx=8192, kv_type="q8_0").runtime.kv_bytes == 80 * 8192 * 8 * 128 * 2 * 34 // 32
    # MLA: 512 + 64 per token per layer, no separate V
    assert estimate_memory("671B", ["Q4_K_M"], n_ctx=4096).runtime.kv_bytes == 61 * 4096 * 576 * 2
    # llama.cpp pads the context to 256
    assert estimate_memory("8B", ["Q4_K_M"], n_ctx=1000).runtime.n_ctx == 1024


def test_fit_counts_output_layer():
    est = estimate_memory("8B", ["Q4_K_M", "F32"], vram_gib=[24])
    q4, f32 = est.types
    assert q4.fit.fits and q4.fit.n_gpu_layers == 33 and q4.fit.max_ctx >= 4096
    assert not f32.fit.fits and 0 < f32.fit.n_gpu_layers < 33 and f32.fit.gpu_bytes <= 24 * 2**30
    two = estimate_memory("70B", ["Q4_K_M"], vram_gib=[24, 24]).types[0].fit
    assert two.fits and sum(two.split) == 80 and two.split == [40, 40]
    one = estimate_memory("70B", ["Q4_K_M"], vram_gib=[24]).types[0].fit
    assert not one.fits and 0 < one.n_gpu_layers < 80


def test_auto_gpu_layers_fits_the_memory_it_is_given(smollm2_gguf):
    from quantkit.memory import auto_gpu_layers

    assert auto_gpu_layers(smollm2_gguf, 4096, vram_bytes=24 * 2**30) == 31  # 30 layers and the output layer
    assert auto_gpu_layers(smollm2_gguf, 4096, vram_bytes=1) == 0


def test_auto_offloads_nothing_on_a_cpu_build(smollm2_gguf):
    from quantkit import runtime
    from quantkit.runtime.offload import resolve_gpu_layers

    if runtime.supports_gpu_offload():
        pytest.skip("a GPU build of llama.cpp: 'auto' depends on the GPU's free memory")
    assert resolve_gpu_layers("auto", smollm2_gguf, 4096) == 0
    assert resolve_gpu_layers("all", smollm2_gguf, 4096) == runtime.ALL_LAYERS
    assert resolve_gpu_layers("7", smollm2_gguf, 4096) == 7
