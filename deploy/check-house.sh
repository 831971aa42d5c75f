#!/usr/bin/env bash
# Checks the house rules of ARCHITECTURE.md that the compiler does not:
#  1. the arrows that must never exist between wasmesh's crates ("Forbidden arrows"),
#     against what cargo resolves: for each crate, the packages its normal dependencies
#     pull in (transitively, with the features that crate alone asks for);
#  2. rooms of one concern: no library source file over 600 lines unless its module doc
#     says why ("//! Longer than 600 lines:" in its first 30 lines);
#  3. one parser per text: API keys (`wsk_...`) and app paths (`/fn/APP/...`) are split
#     only by their types in wasmesh-api.
# Exits 1 naming every breach. Runs in seconds (no compile).
set -euo pipefail
cd "$(dirname "$0")/.."

# crate | packages it must not depend on, directly or not
rules=(
  "wasmesh-api      | tokio hyper quinn sqlx wasmtime llama-cpp-2 reqwest wasmesh-engine wasmesh-runtime wasmesh-registry wasmesh-router"
  "wasmesh-engine   | wasmtime llama-cpp-2 hyper quinn sqlx reqwest"
  "wasmesh-world    | wasmesh-runtime wasmesh-registry wasmesh-router wasmesh-llama llama-cpp-2 sqlx quinn wasmtime-wasi-http wasmtime-wasi"
  "wasmesh-registry | wasmesh-runtime wasmtime-wasi-http wasmtime-wasi wasmesh-llama llama-cpp-2 wasmesh-router wasmesh-agent quinn librqbit"
  "wasmesh-client   | wasmtime sqlx llama-cpp-2 wasmesh-runtime wasmesh-registry"
  "wasmesh-policy   | tokio hyper quinn sqlx reqwest wasmtime llama-cpp-2 object_store"
  "wasmesh-trust    | tokio hyper quinn sqlx reqwest wasmtime llama-cpp-2 wasmesh-api"
  "wasmesh-sim      | tokio hyper quinn sqlx reqwest wasmtime llama-cpp-2"
  "wasmesh-router   | wasmtime llama-cpp-2 sqlx wasmesh-runtime wasmesh-registry wasmesh-llama"
  "wasmesh-tunnel   | wasmtime llama-cpp-2 sqlx hyper"
  "wasmesh-runtime  | llama-cpp-2 wasmesh-llama sqlx quinn wasmesh-registry wasmesh-router"
  "wasmesh-llama    | wasmtime sqlx quinn hyper"
  "wasmesh-weights  | wasmtime llama-cpp-2 sqlx wasmesh-runtime"
  "wasmesh-agent    | llama-cpp-2 wasmesh-llama sqlx wasmesh-registry wasmesh-router"
)

failed=0
for rule in "${rules[@]}"; do
  crate=$(echo "${rule%%|*}" | xargs)
  forbidden=${rule#*|}
  if ! tree=$(cargo tree --locked -p "$crate" -e normal --prefix none -f '{p}' 2>&1); then
    echo "check-house: cannot resolve the dependencies of $crate:" >&2
    echo "$tree" | tail -3 | sed 's/^/    /' >&2
    failed=1
    continue
  fi
  deps=$(awk '{print $1}' <<<"$tree" | sort -u)
  for f in $forbidden; do
    if grep -qx "$f" <<<"$deps"; then
      path=$(cargo tree --locked -p "$crate" -e normal -i "$f" --prefix indent 2>/dev/null | head -8)
      echo "forbidden arrow: $crate depends on $f:" >&2
      echo "$path" | sed 's/^/    /' >&2
      failed=1
    fi
  done
done
if [ "$failed" -ne 0 ]; then
  echo "check-house: see ARCHITECTURE.md, 'Forbidden arrows', for why each is kept out" >&2
fi

# 2. Rooms of one concern.
while IFS= read -r file; do
  [ -f "$file" ] || continue
  lines=$(wc -l <"$file")
  if [ "$lines" -gt 600 ] && ! head -n 30 "$file" | grep -q '^//! Longer than 600 lines:'; then
    echo "room too large: $file has $lines lines; split it by concern, or say why it cannot be in a '//! Longer than 600 lines: ...' module doc" >&2
    failed=1
  fi
done < <(git ls-files --cached --others --exclude-standard '*/src/*.rs' '*/src/**/*.rs' | grep -v '^guest-components/' | grep -v '/tests\.rs$' | sort -u)

# 3. One parser per text.
for pattern in 'strip_prefix("wsk_")' 'strip_prefix("/fn/")'; do
  if hits=$(git grep -n -F "$pattern" -- '*.rs' ':!fabric/api/src/*'); then
    echo "second parser: $pattern outside wasmesh-api (use ApiKey / AppPath):" >&2
    echo "$hits" | sed 's/^/    /' >&2
    failed=1
  fi
done

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "check-house: no forbidden arrow among ${#rules[@]} crates, no oversized room, one parser per text"
