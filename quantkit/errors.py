"""Typed errors. Each carries a one-line message and a hint that tells the user what to do.

The CLI turns them into `error: <message> (<hint>)` and exit code 1; the library only raises.
"""
from __future__ import annotations


class QuantkitError(Exception):
    """Base of every error meant for the user."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.param = param  # the library's name of the argument at fault: the CLI and the server name their flag

    def __str__(self) -> str:
        return self.message


class InputNotFoundError(QuantkitError):
    hint = "check the path"


class NotGGUFError(QuantkitError):
    hint = "pass a .gguf file made by llama.cpp's convert_hf_to_gguf.py, llama-quantize or quantkit convert"


class CorruptGGUFError(QuantkitError):
    hint = "the file is damaged or incomplete: download or convert it again"


class UnsupportedModelError(QuantkitError):
    hint = "quantkit supports the llama and qwen2 architectures (DeepSeek-R1-Distill Llama/Qwen, SmolLM2)"


class UnsupportedTensorTypeError(QuantkitError):
    hint = "the gguf package cannot dequantize this tensor type; use an F16/BF16/F32 or K-quant file"


class OutputError(QuantkitError):
    hint = "choose an output folder you can write to, with enough free space"


class FetchError(QuantkitError):
    hint = "check your network access to the package index or the Hugging Face Hub"


class InvalidArgumentError(QuantkitError):
    hint = "see --help"


class QuantizeError(QuantkitError):
    hint = "run again with --verbose to see libllama's log"


class RemoteGGUFError(QuantkitError):
    hint = "pass a URL of a .gguf file on a server that supports HTTP range requests (the Hugging Face Hub does)"


class ModelConfigError(QuantkitError):
    hint = "pass a Hugging Face model folder or repo whose config.json is valid JSON with the model's shapes"


class RuntimeLoadError(QuantkitError):
    hint = "run with -v to see llama.cpp's log"


class DatasetUnavailableError(QuantkitError):
    hint = "pass --text-file PATH with the text to score (for llama.cpp's numbers, wiki.test.raw from wikitext-2-raw-v1.zip)"


class TextTooShortError(QuantkitError):
    hint = "pass a longer text or a smaller --ctx"


class ContextTooLargeError(QuantkitError):
    hint = "pass a --ctx no larger than the model's training context"


class VocabularyMismatchError(QuantkitError):
    hint = "KL-divergence compares models of one family: quantize every file from the same base model"


class CheckpointError(QuantkitError):
    hint = "pass a Hugging Face checkpoint folder or repo holding config.json and .safetensors weights"


class UnknownPreTokenizerError(QuantkitError):
    hint = ("quantkit names the pre-tokenizer as llama.cpp's converter does, or from tokenizer.json's split rules; "
            "known: the DeepSeek-R1-Distill Qwen and Llama tokenizers, Qwen2, Llama-3, SmolLM and GPT-2")


class ChatTemplateError(QuantkitError):
    hint = "the GGUF's tokenizer.chat_template is missing or broken: convert the model again with its tokenizer files"


class ModelNotFoundError(QuantkitError):
    hint = "pass the path of a .gguf file"


class ContextFullError(QuantkitError):
    hint = "start over with /clear, or pass a larger --ctx"


class RecipeError(QuantkitError):
    hint = "fix the recipe file (see recipes/*.toml for the keys a recipe may hold)"


class RecipeNotFoundError(QuantkitError):
    hint = "run `quantkit recipes` to list them, or pass the path of a .toml file"


class RunStateError(QuantkitError):
    hint = "run the earlier steps first (drop --only/--skip), or pass --force to redo the job"


class UnknownTaskError(QuantkitError):
    hint = "choose a task from `quantkit eval --help`, or pass --task-file FILE with your own problems"


class TaskFileError(QuantkitError):
    hint = "a task file is .jsonl, .csv or .parquet with problem and answer columns (--problem/answer-column)"


class TaskUnavailableError(QuantkitError):
    hint = "connect to the Hub once (unset HF_HUB_OFFLINE) to keep the file for offline use, or pass --task-file"


class GatedTaskError(QuantkitError):
    hint = "accept the dataset's terms on the Hub with your account, then set HF_TOKEN to a token of that account"


class RecordsError(QuantkitError):
    hint = "the samples file is damaged: move it away to start the evaluation over"


class RPCError(QuantkitError):
    hint = "start ggml-rpc-server on each host and pass --rpc HOST:PORT[,HOST:PORT…]"


class ServeDeployError(QuantkitError):
    hint = "the replicas' logs are under /tmp/ray/session_latest/logs/serve/"


class HubUploadError(QuantkitError):
    hint = "set HF_TOKEN to a token with write access (or run `hf auth login`), then push again: what arrived is kept"


class NotImatrixError(QuantkitError):
    hint = "pass an importance matrix made by `quantkit imatrix` or llama-imatrix (.gguf, or the legacy .dat)"


class ImatrixMismatchError(QuantkitError):
    hint = "compute the importance matrix from this model (quantkit imatrix MODEL.gguf)"
