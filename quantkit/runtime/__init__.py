"""The one place that opens llama.cpp: models, contexts, batches, sampler chains, the quantizer, devices and
llama.cpp's log. Nothing else in quantkit imports llama_cpp; everything above this package speaks numpy and
Python types, and only here do ctypes pointers appear. Models, contexts, batches and samplers own their
llama.cpp objects and free them on `close()` (all are context managers).

    with load_model(path, n_gpu_layers=0) as model, \\
         create_context(model, n_ctx=2048, n_seq_max=4, kv_unified=True) as ctx, Batch(512) as batch:
        batch.add(token, pos=0, seq=0, logits=True)
        ctx.decode(batch)
        token = Sampler(Sampling(temperature=0)).sample(ctx, 0)

How many layers to offload is decided above this package (quantkit.runtime.offload), from the memory model.
"""
from ._lib import capture, lib
from .batch import Batch
from .context import Context, EvalCallback, KVCacheFullError, create_context
from .devices import (Device, all_devices, describe_device, extra_buffers_default, gpu_devices,
                      physical_cores, supports_gpu_offload)
from .model import ALL_LAYERS, Model, check_gguf_file, load_model, load_vocabulary
from .quantizer import model_quantize
from .rpc import add_rpc_servers, check_rpc_servers, on_ggml_abort, parse_endpoints, supports_rpc
from .sampler import Grammar, Sampler, Sampling, TokenProbs

__all__ = ["ALL_LAYERS", "Batch", "Context", "Device", "EvalCallback", "Grammar", "KVCacheFullError", "Model",
           "Sampler", "Sampling", "TokenProbs", "add_rpc_servers", "all_devices", "capture", "check_gguf_file",
           "check_rpc_servers", "create_context", "describe_device", "extra_buffers_default", "gpu_devices", "lib", "load_model",
           "load_vocabulary", "model_quantize", "on_ggml_abort", "parse_endpoints", "physical_cores",
           "supports_gpu_offload", "supports_rpc"]
