"""The architecture table of models.py against llama.cpp's own converter (the sdist's conversion/ package, read
with ast): each HF class is registered there for the same gguf MODEL_ARCH, and its q/k rows are permuted exactly
where the table says so."""
from __future__ import annotations

import ast
from pathlib import Path

from gguf import MODEL_ARCH_NAMES

from quantkit.models import ARCHITECTURES, CONVERTIBLE, R1, R1_DISTILLS, architecture_named, architecture_of


def _converter_classes(source: Path) -> dict[str, ast.ClassDef]:
    """llama.cpp's converter class for each HF class name it registers (`@ModelBase.register("…", …)`)."""
    folder = source / "conversion"
    files = sorted(folder.glob("*.py")) if folder.is_dir() else [source / "convert_hf_to_gguf.py"]
    classes = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", None) == "register":
                    for arg in deco.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            classes[arg.value] = node
    return classes


def _model_arch(cls: ast.ClassDef) -> str:
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "model_arch" for t in stmt.targets):
            return stmt.value.attr  # gguf.MODEL_ARCH.X
    raise AssertionError(f"{cls.name} sets no model_arch")


def _permutes(cls: ast.ClassDef) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "permute" for n in ast.walk(cls))


def test_the_table_matches_llama_cpps_converter(llama_cpp_source):
    classes = _converter_classes(llama_cpp_source)
    for arch in ARCHITECTURES:
        cls = classes[arch.hf_class]
        assert _model_arch(cls) == arch.model_arch.name, arch.hf_class
        assert arch.name == MODEL_ARCH_NAMES[arch.model_arch]
        if arch.convertible:  # the estimate-only architecture's layout is not ours to convert
            assert _permutes(cls) == arch.permuted_qk, f"{arch.hf_class} ({cls.name})"


def test_lookups():
    assert [a.hf_class for a in CONVERTIBLE] == ["LlamaForCausalLM", "Qwen2ForCausalLM"]
    assert architecture_of("Qwen2ForCausalLM").name == "qwen2"
    assert architecture_named("deepseek2").hf_class == "DeepseekV3ForCausalLM"
    assert architecture_of("MistralForCausalLM") is None and architecture_named(None) is None
    assert architecture_of(["LlamaForCausalLM"]) is None  # a garbled config.json is not a key
    assert {m.arch.name for m in R1_DISTILLS} == {"llama", "qwen2"} and R1.arch.name == "deepseek2"
