"""Assemble, on this machine, what benchmarks/gpu.sh needs on the offline device machine, in the ignored folder
.gpu/ (at most 64 MiB: what one device call may carry):

  .gpu/llama.cpp/   llama.cpp from the llama-cpp-python 0.3.36 sdist, without vocab models, tests, docs, examples
                    and the GPU backends other than CUDA
  .gpu/llama_cpp/   llama-cpp-python's Python package from the same sdist (its ctypes bindings; gpu.sh puts the
                    CUDA build's shared libraries into its lib/ folder, where it and quantkit look for them)
  .gpu/tokenizer/   the R1-Distill-Qwen tokenizer files of reference/tiny.py, for gpu_model.py
  .gpu/whl/         cp312 manylinux wheels of the packages the device image lacks

    python benchmarks/gpu_prepare.py [--dry-run]     (gpu_prepare.sh runs this with the project's .venv)

--dry-run lists what would be kept and the sizes, and writes nothing; --tokenizer prints the tokenizer folder
(gpu.sh --cpu uses it). Never imported by the package.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEST = ROOT / ".gpu"
LIMIT = 64 * 2**20
SDIST_PREFIX = "llama_cpp_python-0.3.36/"
VENDOR = SDIST_PREFIX + "vendor/llama.cpp/"

# top-level folders of llama.cpp that no CMake target of a CUDA build of libllama and its tools reads
DROP_TOP = {"models", "tests", "docs", "examples", "benches", "media", "gguf-py", "scripts", "conversion", ".github",
            ".devops", "pocs", "prompts", "grammars", "requirements", "ci", "build-xcframework.sh"}
# ggml backends other than CPU and CUDA: ggml's CMake adds a backend's folder only when that backend is on
DROP_BACKENDS = {"ggml-blas", "ggml-cann", "ggml-hexagon", "ggml-hip", "ggml-metal", "ggml-musa", "ggml-opencl",
                 "ggml-openvino", "ggml-rpc", "ggml-sycl", "ggml-virtgpu", "ggml-vulkan", "ggml-webgpu", "ggml-zdnn",
                 "ggml-zendnn"}
DROP_SUFFIXES = (".gguf", ".ipynb", ".png", ".jpg", ".jpeg", ".gif", ".mp4", ".webp")

# name==version of each wheel the device image lacks (its list: /work/.library/device/KINDS.md); the versions of
# this project's environment. fastapi/uvicorn/pydantic serve `quantkit serve` where that command exists.
WHEELS = [
    "gguf==0.19.0", "diskcache==5.6.3",
    "math-verify==0.9.0", "latex2sympy2_extended==1.11.0", "antlr4-python3-runtime==4.13.2",
    "fastapi==0.165.0", "starlette==1.10.0", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
    "typing-inspection==0.4.5", "uvicorn==0.54.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]


def keep_llama_cpp(rel: str) -> bool:
    """Whether the file at `rel` (relative to llama.cpp's root) goes into the trimmed tree."""
    parts = rel.split("/")
    if parts[0] in DROP_TOP or any(p in (".git", ".github", "__pycache__") for p in parts):
        return False
    if len(parts) > 2 and parts[0] == "ggml" and parts[1] == "src" and parts[2] in DROP_BACKENDS:
        return False
    return not rel.lower().endswith(DROP_SUFFIXES)


def keep_package(rel: str) -> bool:
    """Whether the file at `rel` (relative to the sdist's llama_cpp/) is part of the Python package."""
    return rel.endswith(".py") or rel.endswith("py.typed")


def sdist_members(tar: tarfile.TarFile):
    """(member, destination relative to .gpu/) of every sdist file that is kept."""
    for m in tar.getmembers():
        if not m.isfile():
            continue
        if m.name.startswith(VENDOR):
            rel = m.name[len(VENDOR):]
            if keep_llama_cpp(rel):
                yield m, "llama.cpp/" + rel
        elif m.name.startswith(SDIST_PREFIX + "llama_cpp/"):
            rel = m.name[len(SDIST_PREFIX + "llama_cpp/"):]
            if keep_package(rel) and not rel.startswith("server/"):
                yield m, "llama_cpp/" + rel


def _sdist() -> Path:
    from reference.sdist import _download

    return _download()


def _tokenizer() -> Path:
    from reference.cache import cached_dir
    from reference.tiny import QWEN2, _write_tokenizer  # the tokenizer half of the tiny Qwen checkpoint

    def build(tmp: Path) -> None:
        _write_tokenizer(QWEN2, tmp)

    return cached_dir("r1-qwen-tokenizer-v1", build)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="list what would be kept and its size; write nothing")
    ap.add_argument("--tokenizer", action="store_true", help="print the tokenizer folder (made once) and exit")
    args = ap.parse_args()
    if args.tokenizer:
        print(_tokenizer())
        return
    with tarfile.open(_sdist()) as tar:
        kept = list(sdist_members(tar))
        kept_bytes = sum(m.size for m, _ in kept)
        all_bytes = sum(m.size for m in tar.getmembers() if m.isfile())
        if args.dry_run:
            tops: dict[str, int] = {}
            for m, dest in kept:
                top = "/".join(dest.split("/")[:2])
                tops[top] = tops.get(top, 0) + m.size
            for top, size in sorted(tops.items(), key=lambda kv: -kv[1])[:25]:
                print(f"{size / 2**20:8.2f} MiB  {top}")
            print(f"sdist: {len(kept)} files kept, {kept_bytes / 2**20:.1f} of {all_bytes / 2**20:.1f} MiB")
            return
        shutil.rmtree(DEST, ignore_errors=True)
        DEST.mkdir()
        for m, dest in kept:
            m.name = dest
            tar.extract(m, DEST, filter="data")
    shutil.copytree(_tokenizer(), DEST / "tokenizer", ignore=shutil.ignore_patterns(".complete"))
    (DEST / "whl").mkdir()
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(DEST / "whl"),
                    *WHEELS], check=True)
    parts = {p.name: folder_bytes(p) for p in sorted(DEST.iterdir())}
    total = sum(parts.values())
    for name, size in parts.items():
        print(f"{size / 2**20:8.2f} MiB  .gpu/{name}")
    print(f"{total / 2**20:8.2f} MiB  .gpu total (limit 64 MiB with the working tree)")
    if total > LIMIT:
        sys.exit(f"error: .gpu is {total / 2**20:.1f} MiB, over the 64 MiB a device call carries")


if __name__ == "__main__":
    main()
