"""quantize every 2-D float tensor of a safetensors checkpoint (int2..int8 or GGUF)

``slimgrad quantize IN.safetensors -o OUT --bits 4 --group-size 32
[--format safetensors|gguf]`` quantizes each 2-D float tensor (float32,
float16, bfloat16, float64), keeps the others, writes OUT and prints one line
per tensor: name, shape, bytes before and after (as written), and the relative
reconstruction error ``||w - w_hat|| / ||w||`` or why the tensor was kept.

safetensors output: kept tensors (vectors, integers, float8, ...) are copied
byte for byte, and the input's ``__metadata__`` is kept next to the
``slimgrad.quant`` spec. GGUF output: kept tensors keep their values (integers
as I8..I64, see :func:`slimgrad.quant.save_gguf`); a tensor whose block scale
would overflow float16 is stored unquantized, with a note in the table.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .io import GgufTensor


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
        "--nonfinite",
        default="raise",
        choices=("raise", "propagate"),
        help="a NaN/inf in a tensor: stop with an error (default), or keep going "
        "(safetensors: its groups get a NaN scale; GGUF: the tensor is kept unquantized)",
    )
    parser.add_argument(
        "--format",
        choices=("safetensors", "gguf"),
        default=None,
        help="output format (default: from OUT's extension)",
    )


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    w64 = w.astype(np.float64)
    norm = float(np.linalg.norm(w64))
    diff = float(np.linalg.norm(w64 - w_hat.astype(np.float64)))
    return diff / norm if norm else (0.0 if diff == 0 else math.inf)


def _first_nonfinite(w: np.ndarray) -> str | None:
    """``"non-finite value nan at index (1, 3)"`` for the first NaN/inf of ``w``, or None."""
    bad = np.flatnonzero(~np.isfinite(w.reshape(-1)))
    if not bad.size:
        return None
    index = tuple(int(i) for i in np.unravel_index(bad[0], w.shape))
    return f"non-finite value {float(w.reshape(-1)[bad[0]])} at index {index}"


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from . import gguf as sg
    from . import io
    from ._tensor import quantize

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
        try:
            import gguf  # noqa: F401  (the writer)
        except ImportError:
            raise UsageError("GGUF output needs the gguf package: pip install gguf") from None
    if _same_file(args.input, args.output):
        raise UsageError(f"-o {args.output}: is the input file; write to another path")
    entries, metadata = io.read_checkpoint(args.input)
    if io.META_KEY in metadata:
        raise UsageError(f"{args.input}: already quantized by slimgrad ({io.META_KEY} metadata)")
    io.check_output(args.output)

    rows = []  # (name, shape, bytes before, bytes after, error or note)
    quantized: dict[str, Any] = {}  # safetensors: name -> QuantizedTensor or the untouched entry
    prepared = []  # GGUF: io.GgufTensor in file order
    for name, e in entries.items():
        before = len(e.data)
        shape = tuple(e.shape)
        if not (len(shape) == 2 and e.dtype in io.FLOAT_CODES and 0 not in shape):
            if gguf_type is None:
                quantized[name] = e
                rows.append((name, shape, before, before, "kept"))
            else:
                t = io.gguf_plain(name, io.to_array(name, e))
                prepared.append(t)
                rows.append((name, shape, before, t.nbytes, _kept(t)))
            continue
        w = io.to_array(name, e)
        problem = _first_nonfinite(w)
        if problem and args.nonfinite == "raise":
            raise ValueError(f"{name}: {problem} (--nonfinite propagate keeps going)")
        if gguf_type is not None:
            if problem:
                t = io.gguf_plain(name, w, "non-finite values")
            else:
                t = io.gguf_tensor(name, w, gguf_type)
            prepared.append(t)
            if t.type == gguf_type:
                err = _rel_error(w, sg.dequantize(t.array, gguf_type, shape))
                rows.append((name, shape, before, t.nbytes, f"{err:.3e}"))
            else:
                rows.append((name, shape, before, t.nbytes, _kept(t)))
            continue
        qt = quantize(
            w,
            args.bits,
            symmetric=not args.asymmetric,
            granularity="group" if args.group_size else "channel",
            group_size=args.group_size or 128,
            rounding=args.rounding,
            clip=args.clip,
            nonfinite=args.nonfinite,
        )
        quantized[name] = qt
        rows.append((name, shape, before, qt.nbytes, f"{_rel_error(w, qt.dequantize()):.3e}"))

    if gguf_type is not None:
        io.write_gguf(args.output, prepared)
    else:
        stored, specs = io._layout(quantized, raw_ok=True)
        out = {k: v if isinstance(v, io.st.Entry) else io.to_entry(v) for k, v in stored.items()}
        meta = io._metadata({"source": os.path.basename(args.input), **metadata}, specs)
        io._atomic(args.output, lambda tmp: io.st.write(tmp, out, meta))
    _print_table(rows, gguf_type or fmt)
    return 0


def _kept(t: GgufTensor) -> str:
    """The table's note for a tensor written unquantized to GGUF."""
    return f"{t.type} ({t.note})" if t.note else f"kept {t.type}"


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
