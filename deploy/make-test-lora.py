#!/usr/bin/env python3
"""Writes a LoRA adapter GGUF with random low-rank tensors for a base GGUF model.

Used by the tests: nothing is fetched from a model hub. The adapter targets the
attention and feed-forward projections of every layer; its shapes come from the
base model's own tensors, so it fits any llama-architecture GGUF.

    python3 deploy/make-test-lora.py BASE.gguf OUT.gguf [--rank 8] [--seed 1] [--alpha 16] [--std 0.02]

llama.cpp's layout: for a weight W with ggml dims [n_in, n_out], lora_a is
[n_in, rank] and lora_b is [rank, n_out] (numpy shapes are the reverse).
"""
import argparse
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter

TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--std", type=float, default=0.08, help="standard deviation of the random factors")
    args = p.parse_args()

    reader = GGUFReader(args.base)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        print(f"{args.base}: no general.architecture; is it a GGUF model?", file=sys.stderr)
        return 1
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()

    rng = np.random.default_rng(args.seed)
    writer = GGUFWriter(args.out, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", args.alpha)
    n = 0
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in TARGETS or parts[3] != "weight":
            continue
        n_in, n_out = int(t.shape[0]), int(t.shape[1])  # ggml order
        a = rng.normal(0.0, args.std, size=(args.rank, n_in)).astype(np.float32)
        b = rng.normal(0.0, args.std, size=(n_out, args.rank)).astype(np.float32)
        writer.add_tensor(f"{t.name}.lora_a", a)
        writer.add_tensor(f"{t.name}.lora_b", b)
        n += 1
    if n == 0:
        print(f"{args.base}: no attention or feed-forward weights found", file=sys.stderr)
        return 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out}: rank {args.rank}, {n} target tensors, architecture {arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
