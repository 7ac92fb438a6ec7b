#!/usr/bin/env bash
# The CUDA check of issue #17 in one call: build llama.cpp for CUDA (sm_90), install quantkit against it, run the
# tests that need a GPU, make a random-weight Qwen2 with R1-Distill-Qwen-1.5B's shapes, quantize it to Q4_K_M and
# Q8_0 with quantkit, and measure quantkit against llama.cpp's own tools. The table comes last; logs, results.json
# and the table go to $OUT (default out/gpu-check) — logs as one logs.tgz, since a device call returns 8 files.
#
#   bash benchmarks/gpu_prepare.sh        # HERE, once: fills the ignored .gpu/ (≤ 64 MiB)
#   device run: command "bash benchmarks/gpu.sh", carry [".gpu"], timeout_s 600
#   bash benchmarks/gpu.sh --cpu          # the same steps here on the CPU (a 2-layer model, small sizes)
#
# Knobs: GPU_CHECK_LAYERS (default 28; 2 in CPU mode), GPU_CHECK_CMAKE_ARGS (extra cmake arguments, e.g.
# -DGGML_CUDA_FA=OFF if the build alone nears the limit), GPU_CHECK_BUDGET (seconds, default 570),
# GPU_CHECK_WORK (scratch folder; a second run there reuses the build and the models).
#
# GPU mode needs nvcc, cmake, ninja, python3 with numpy/typer/pandas/pytest (the device image has them) and .gpu/.
# CPU mode uses the project's .venv (llama-cpp-python's CPU wheel) and llama.cpp's tools built by
# reference/llama_tools.py under ~/.cache/quantkit-bench (built on first use). Never imported by the package.
set -uo pipefail
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/quantkit-gpu-check-$MODE}
LOGS=$OUT/logs
mkdir -p "$OUT" "$WORK"
rm -rf "$LOGS" && mkdir -p "$LOGS"
START=$(date +%s)
# the device call's limit is 600 s: the measurements skip what would run past this many seconds from the start
export GPU_CHECK_START=$START GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-570}
echo "quantkit gpu check · mode $MODE · $(date -u '+%Y-%m-%d %H:%M UTC') · logs in $LOGS" | tee "$LOGS/steps.log"

step() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOGS/steps.log"; }
pack_logs() { (cd "$OUT" && tar czf logs.tgz logs && rm -rf logs); }
trap pack_logs EXIT

# 3a. (with the build on the GPU machine) the checkpoint: a random-weight Qwen2 with R1-Distill-Qwen-1.5B's shapes
# (LAYERS of its 28 layers), and its BF16 GGUF by quantkit's own converter (which needs no libllama)
MODELS=$WORK/models
make_base() {
    [ -f "$MODELS/done-$LAYERS" ] && return 0
    rm -rf "$WORK/ckpt" "$MODELS"
    "$PY" benchmarks/gpu_model.py "$WORK/ckpt" --tokenizer "$TOKENIZER" --layers "$LAYERS" \
    && "$PY" -m quantkit convert "$WORK/ckpt" --outtype BF16 -o "$MODELS" --json
}

# 1. llama.cpp: libllama (+ ggml, mtmd) for llama-cpp-python and llama-bench / llama-perplexity / llama-server
if [ "$MODE" = gpu ]; then
    [ -d .gpu/llama.cpp ] || { step "error: .gpu/ missing: run benchmarks/gpu_prepare.sh here first and carry .gpu"; exit 2; }
    BUILD=$WORK/build
    SITE=$WORK/site
    rm -rf "$SITE" && mkdir -p "$SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpu/whl/*.whl \
        >"$LOGS/install.log" 2>&1 || { step "error: wheel install failed"; cat "$LOGS/install.log"; exit 4; }
    export PYTHONPATH=$SITE:$ROOT
    PY=python3
    TOKENIZER=.gpu/tokenizer
    LAYERS=${GPU_CHECK_LAYERS:-28}
    step "3a. (in the background) random-weight R1-Distill-Qwen-1.5B-shaped checkpoint ($LAYERS layers) → BF16 GGUF"
    make_base >"$LOGS/model.log" 2>&1 &
    BASE_PID=$!
    step "1. build llama.cpp (CUDA, sm_90, Release, ninja)"
    # cuBLAS: the toolkit's, else the pip wheel's (nvidia-cublas, which the image's torch uses): a toolkit made of
    # pip packages may lack it, as the one on the machine that prepared this script does
    CUBLAS_ARGS=()
    NVCC_DIR=$(dirname "$(readlink -f "$(command -v nvcc)")")
    if [ ! -f "$NVCC_DIR/../include/cublas_v2.h" ] && [ ! -f /usr/local/cuda/include/cublas_v2.h ]; then
        INC=$(python3 -c "import nvidia, glob; print(next(iter(sorted(h for p in nvidia.__path__ for h in glob.glob(p + '/**/include/cublas_v2.h', recursive=True))), ''))" 2>/dev/null)
        if [ -n "$INC" ]; then
            INC=$(dirname "$INC")
            LIB=$(dirname "$INC")/lib
            CUBLAS_ARGS=("-DCUDA_cublas_LIBRARY=$(ls "$LIB"/libcublas.so* | head -1)"
                         "-DCUDA_cublasLt_LIBRARY=$(ls "$LIB"/libcublasLt.so* | head -1)" "-DCMAKE_CUDA_FLAGS=-I$INC"
                         "-DCMAKE_CXX_FLAGS=-I$INC")
            export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            step "   cuBLAS from the pip wheel: $INC"
        fi
    fi
    if [ ! -x "$BUILD/bin/llama-server" ]; then
        cmake -S .gpu/llama.cpp -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
            -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            "${CUBLAS_ARGS[@]}" ${GPU_CHECK_CMAKE_ARGS:-} >"$LOGS/build.log" 2>&1 \
        && timeout 420 cmake --build "$BUILD" -j 16 --target llama mtmd llama-bench llama-perplexity llama-server \
            >>"$LOGS/build.log" 2>&1 \
        || { step "error: the CUDA build failed (tail of build.log follows)"; tail -30 "$LOGS/build.log"; exit 3; }
    fi
    TOOLS=$BUILD/bin
    step "   built in $(( $(date +%s) - START ))s"
    # 2. llama-cpp-python's ctypes package from the sdist, its lib/ holding this build's libraries (quantkit finds
    # libggml beside libllama there too), plus the carried wheels, in one target folder
    step "2. install quantkit (PYTHONPATH) and llama-cpp-python's package with the CUDA build's libraries"
    cp -r .gpu/llama_cpp "$SITE/llama_cpp" && mkdir -p "$SITE/llama_cpp/lib"
    find "$BUILD" -name 'lib*.so*' -not -path '*/CMakeFiles/*' -exec cp -P {} "$SITE/llama_cpp/lib/" \;
    export LLAMA_CPP_LIB_PATH=$SITE/llama_cpp/lib
else
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    [ -x "$PY" ] || { step "error: $PY missing: run 'make setup-test' first"; exit 2; }
    step "1. llama.cpp's CPU tools (reference/llama_tools.py's build under ~/.cache/quantkit-bench)"
    TOOLS=$("$PY" -c "
import sys; sys.path.insert(0, '.')
from reference.llama_tools import build_tool
for t in ('llama-bench', 'llama-perplexity', 'llama-server'): p = build_tool(t)
print(p.parent)" 2>"$LOGS/build.log") || { step "error: building the CPU tools failed"; tail -20 "$LOGS/build.log"; exit 3; }
    step "2. quantkit from the project's .venv (llama-cpp-python's CPU build)"
    TOKENIZER=$("$PY" benchmarks/gpu_prepare.py --tokenizer 2>>"$LOGS/build.log") || { step "error: tokenizer"; exit 4; }
    LAYERS=${GPU_CHECK_LAYERS:-2}
fi
echo "llama-cpp-python: $("$PY" -c 'import llama_cpp; print(llama_cpp.__file__, "offload:", bool(llama_cpp.llama_supports_gpu_offload()))' 2>&1)" \
    | tee -a "$LOGS/steps.log"

# 3b. the model, quantized to Q4_K_M and Q8_0 by quantkit (libllama's quantizer)
step "3. random-weight R1-Distill-Qwen-1.5B-shaped model ($LAYERS layers): BF16, then Q4_K_M and Q8_0"
if [ -n "${BASE_PID:-}" ]; then
    wait "$BASE_PID" || { step "error: making the checkpoint failed"; tail -20 "$LOGS/model.log"; exit 5; }
else
    make_base >"$LOGS/model.log" 2>&1 || { step "error: making the checkpoint failed"; tail -20 "$LOGS/model.log"; exit 5; }
fi
if [ ! -f "$MODELS/done-$LAYERS" ]; then
    "$PY" -m quantkit convert "$WORK/ckpt" -t Q4_K_M,Q8_0 -o "$MODELS" --json >>"$LOGS/model.log" 2>&1 \
    || { step "error: quantizing failed"; tail -20 "$LOGS/model.log"; exit 5; }
    rm -rf "$WORK/ckpt" "$MODELS"/*-BF16.gguf
    touch "$MODELS/done-$LAYERS"
fi
Q4=$(ls "$MODELS"/*-Q4_K_M.gguf) Q8=$(ls "$MODELS"/*-Q8_0.gguf)
step "   $(ls -l "$MODELS" | awk 'NR>1 {printf "%s %.0f MiB  ", $9, $5/1048576}')"

# 2b. the tests that need a GPU (they skip on a CPU build). On the device the SmolLM2 GGUF they load (98 MB, too
# big to carry) is stood in for by the Q4_K_M model above, in a test cache of its own.
step "2b. tests that need a GPU"
if [ "$MODE" = gpu ]; then
    export QUANTKIT_TEST_CACHE=$WORK/test-cache
    mkdir -p "$QUANTKIT_TEST_CACHE/quantkit-cache/embedded"
    ln -sf "$Q4" "$QUANTKIT_TEST_CACHE/quantkit-cache/embedded/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
env -u QUANTKIT_CACHE timeout 180 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_chat.py -k "gpu or offload" \
    >"$LOGS/pytest.log" 2>&1
echo "$?" >"$WORK/pytest.rc"
tail -3 "$LOGS/pytest.log" | tee -a "$LOGS/steps.log"

# 4 and 5. the measurements and the table (benchmarks/gpu_check.py)
step "4. measure"
"$PY" benchmarks/gpu_check.py --mode "$MODE" --tools "$TOOLS" --q4 "$Q4" --q8 "$Q8" --logs "$LOGS" \
    --out "$OUT" --pytest-log "$LOGS/pytest.log" --pytest-rc "$(cat "$WORK/pytest.rc")" 2>"$LOGS/gpu_check.stderr"
rc=$?
# the table stays the last thing on stdout: what follows goes to stderr and the steps log
[ $rc = 0 ] || { step "gpu_check.py exited $rc (a FAIL row, or an error: logs/gpu_check.stderr)"; tail -5 "$LOGS/gpu_check.stderr"; } >&2
step "done in $(( $(date +%s) - START ))s" >&2
exit $rc
