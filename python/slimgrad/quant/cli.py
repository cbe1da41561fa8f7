"""quantize every 2-D float tensor of a safetensors checkpoint (int2..int8 or GGUF)

``slimgrad quantize IN.safetensors -o OUT --bits 4 --group-size 32
[--format safetensors|gguf]`` quantizes each 2-D float tensor, keeps the
others as they are, writes OUT and prints one line per tensor: name, shape,
bytes before and after, and the relative reconstruction error
``||w - w_hat|| / ||w||``.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="safetensors checkpoint")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    parser.add_argument("--bits", type=int, default=8, help="2..8 (GGUF: 8, 5 or 4); default 8")
    parser.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="values per scale along the last axis (default: one scale per row; GGUF: 32)",
    )
    parser.add_argument(
        "--asymmetric", action="store_true", help="unsigned codes with a zero point"
    )
    parser.add_argument(
        "--rounding", default="half_even", choices=("half_even", "half_away", "stochastic")
    )
    parser.add_argument("--clip", default="minmax", choices=("minmax", "percentile", "mse"))
    parser.add_argument(
        "--format",
        choices=("safetensors", "gguf"),
        default=None,
        help="output format (default: from OUT's extension)",
    )


def _load(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for bad files
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    w64 = w.astype(np.float64)
    norm = float(np.linalg.norm(w64))
    diff = float(np.linalg.norm(w64 - w_hat.astype(np.float64)))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from . import QuantizedTensor, io, quantize
    from . import gguf as sg

    fmt = args.format or ("gguf" if args.output.endswith(".gguf") else "safetensors")
    if not 2 <= args.bits <= 8:
        raise UsageError(f"--bits: expected 2..8, got {args.bits}")
    if args.group_size is not None and args.group_size < 1:
        raise UsageError(f"--group-size: expected a positive integer, got {args.group_size}")
    gguf_type = None
    if fmt == "gguf":
        gguf_type = io.GGUF_TYPES.get((args.bits, not args.asymmetric))
        if gguf_type is None:
            raise UsageError(
                f"--bits {args.bits}{' --asymmetric' if args.asymmetric else ''}: GGUF export "
                "supports 8 (Q8_0), 5 (Q5_0, --asymmetric Q5_1) and 4 (Q4_0, --asymmetric Q4_1)"
            )
        if args.group_size not in (None, sg.BLOCK_SIZE):
            raise UsageError(
                f"--group-size: GGUF blocks hold {sg.BLOCK_SIZE} values, got {args.group_size}"
            )
    tensors = _load(args.input)
    rows = []
    keep: dict[str, np.ndarray] = {}  # GGUF: the float tensors, quantized by the writer call
    out: dict[str, QuantizedTensor | np.ndarray] = {}
    for name, w in tensors.items():
        quantizable = w.ndim == 2 and w.dtype.kind == "f" and w.size > 0
        before = w.nbytes
        if not quantizable:
            out[name] = keep[name] = w
            rows.append((name, w.shape, before, before, "kept"))
            continue
        if fmt == "gguf":
            keep[name] = w
            if w.shape[-1] % sg.BLOCK_SIZE:
                rows.append((name, w.shape, before, w.size * 4, "F32 (row not a multiple of 32)"))
                continue
            blocks = sg.quantize(w, gguf_type)
            err = _rel_error(w, sg.dequantize(blocks, gguf_type, w.shape))
            rows.append((name, w.shape, before, blocks.nbytes, f"{err:.3e}"))
        else:
            granularity = "group" if args.group_size else "channel"
            qt = quantize(
                w,
                args.bits,
                symmetric=not args.asymmetric,
                granularity=granularity,
                group_size=args.group_size or 128,
                rounding=args.rounding,
                clip=args.clip,
            )
            out[name] = qt
            rows.append((name, w.shape, before, qt.nbytes, f"{_rel_error(w, qt.dequantize()):.3e}"))
    if gguf_type is not None:
        io.save_gguf(args.output, keep, gguf_type)
    else:
        io.save(args.output, out, metadata={"source": os.path.basename(args.input)})
    _print_table(rows, gguf_type or fmt)
    return 0


def _print_table(rows: list[tuple], scheme: str) -> None:
    width = max([len("tensor")] + [len(r[0]) for r in rows])
    print(
        f"{'tensor':<{width}}  {'shape':<14} {'bytes before':>13} {'bytes after':>12}  rel. error"
    )
    total_before = total_after = 0
    for name, shape, before, after, err in rows:
        total_before += before
        total_after += after
        shape_s = "x".join(map(str, shape)) or "scalar"
        print(f"{name:<{width}}  {shape_s:<14} {before:>13,} {after:>12,}  {err}")
    ratio = total_before / total_after if total_after else 1.0
    summary = f"({ratio:.2f}x smaller, {scheme})"
    print(f"{'total':<{width}}  {'':<14} {total_before:>13,} {total_after:>12,}  {summary}")
