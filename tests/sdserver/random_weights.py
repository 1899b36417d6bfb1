#!/usr/bin/env python3
"""Write a Stable Diffusion 1.5 model folder (diffusers layout) with random float16 weights.

Usage: random_weights.py MANIFEST_GZ OUT_DIR

MANIFEST_GZ is shared/data/sd15-random-weights-manifest.json.gz: {"<file path>": {"<tensor name>": [dim, ...]}}.
Every tensor gets float16 values: ones for norm weights, zeros for biases, and normals scaled by
1/sqrt(fan_in) elsewhere, from numpy generators seeded by a fixed seed and the tensor's name (so the
output is the same on every run and does not depend on the order of the manifest).
stable-diffusion.cpp's sd-server hard-codes the SD 1.5 architecture and loads this folder with
`-m OUT_DIR`; it needs no config or tokenizer files (the CLIP vocabulary is compiled in).

The folder is about 2.0 GB. Tensors are streamed to disk one at a time (peak memory is about the
largest tensor in float32, ~150 MB) and the files are checked with the safetensors package afterwards.
The folder is built next to OUT_DIR and renamed into place when complete; a stamp file inside it makes
a second run a no-op. Concurrent runs serialise on a lock file next to OUT_DIR.
"""

from __future__ import annotations

import fcntl
import glob
import gzip
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import time
import zlib

import numpy as np

SEED = 1515
# Bump when the generated values or layout change, so old caches are rebuilt.
GENERATOR_VERSION = 1
STAMP_NAME = ".random-weights-stamp"


def tensor_values(name: str, shape: list[int]) -> np.ndarray:
    """The float16 values of one tensor."""
    last = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    if name.endswith(".bias"):
        return np.zeros(shape, dtype=np.float16)
    if name.endswith(".weight") and "norm" in last:
        return np.ones(shape, dtype=np.float16)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode("utf-8"))])
    values = rng.standard_normal(size=shape, dtype=np.float32)
    values *= np.float32(1.0 / math.sqrt(max(fan_in, 1)))
    return values.astype(np.float16)


def write_safetensors(path: str, tensors: dict[str, list[int]]) -> None:
    """Stream a float16 safetensors file: 8-byte header length, JSON header, raw little-endian data."""
    names = sorted(tensors)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        nbytes = math.prod(tensors[name]) * 2
        header[name] = {"dtype": "F16", "shape": tensors[name], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name in names:
            values = tensor_values(name, tensors[name])
            f.write(values.astype("<f2", copy=False).tobytes(order="C"))
            del values
        f.flush()
        os.fsync(f.fileno())


def verify(path: str, tensors: dict[str, list[int]]) -> None:
    """Read the file back with the safetensors package: names, shapes, dtype, and a few values."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        keys = set(f.keys())
        if keys != set(tensors):
            raise SystemExit(f"{path}: tensor names differ from the manifest")
        for name, shape in tensors.items():
            sl = f.get_slice(name)
            if list(sl.get_shape()) != list(shape) or sl.get_dtype() != "F16":
                raise SystemExit(f"{path}: {name} has {sl.get_dtype()} {sl.get_shape()}, expected F16 {shape}")
        # Spot-check the smallest tensors' values against the generator.
        for name in sorted(tensors, key=lambda n: math.prod(tensors[n]))[:8]:
            if not np.array_equal(f.get_tensor(name), tensor_values(name, tensors[name])):
                raise SystemExit(f"{path}: {name} values do not match")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} MANIFEST_GZ OUT_DIR", file=sys.stderr)
        return 2
    manifest_path, out_dir = argv[1], os.path.abspath(argv[2].rstrip("/") or "/")

    with open(manifest_path, "rb") as f:
        manifest_bytes = f.read()
    manifest: dict[str, dict[str, list[int]]] = json.loads(gzip.decompress(manifest_bytes))
    stamp_content = (
        f"generator={GENERATOR_VERSION} seed={SEED} "
        f"manifest_sha256={hashlib.sha256(manifest_bytes).hexdigest()}\n"
    )
    stamp_path = os.path.join(out_dir, STAMP_NAME)

    def up_to_date() -> bool:
        try:
            with open(stamp_path) as f:
                return f.read() == stamp_content
        except OSError:
            return False

    if up_to_date():
        print(f"random_weights.py: {out_dir} is up to date")
        return 0

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with open(out_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date():
            print(f"random_weights.py: {out_dir} is up to date")
            return 0

        start = time.monotonic()
        # Leftovers of a run that was killed (we hold the lock, so none is in use).
        for stale in glob.glob(glob.escape(out_dir) + ".tmp.*") + glob.glob(glob.escape(out_dir) + ".old.*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = f"{out_dir}.tmp.{os.getpid()}"
        try:
            total = 0
            for rel_path, tensors in manifest.items():
                path = os.path.join(tmp_dir, rel_path)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_safetensors(path, tensors)
                verify(path, tensors)
                total += os.path.getsize(path)
            with open(os.path.join(tmp_dir, STAMP_NAME), "w") as f:
                f.write(stamp_content)

            # A directory cannot be renamed over a non-empty one: move any stale folder aside first.
            old_dir = None
            if os.path.lexists(out_dir):
                old_dir = f"{out_dir}.old.{os.getpid()}"
                os.rename(out_dir, old_dir)
            os.rename(tmp_dir, out_dir)
            if old_dir is not None:
                shutil.rmtree(old_dir, ignore_errors=True)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

        print(
            f"random_weights.py: wrote {out_dir} ({total / 1e9:.2f} GB) "
            f"in {time.monotonic() - start:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
