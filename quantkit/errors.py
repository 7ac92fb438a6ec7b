"""Typed errors. Each carries a one-line message and a hint that tells the user what to do.

The CLI turns them into `error: <message> (<hint>)` and exit code 1; the library only raises.
"""
from __future__ import annotations


class QuantkitError(Exception):
    """Base of every error meant for the user."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotBuiltError(QuantkitError):
    """A command that exists in the CLI's shape but has no implementation yet."""


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
