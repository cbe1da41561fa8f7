"""prune a safetensors checkpoint (magnitude or N:M) and print per-tensor sparsity.

Every float tensor (F16, BF16, F32, F64) with at least 2 dimensions is
pruned; vectors (biases, norms) and integer tensors are copied unchanged,
byte for byte, as is the metadata.
"""

from __future__ import annotations

import argparse
import math
import os
import re

import numpy as np

from .. import _core
from .. import _safetensors as st
from ..errors import UsageError
from ._masks import _first_nan, global_magnitude_masks, magnitude_mask, nm_mask


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.safetensors", help="checkpoint to prune")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors",
                        help="where to write the pruned checkpoint (written atomically)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--sparsity", type=float, metavar="S",
                     help="prune this fraction (0..1) of each tensor by magnitude")
    how.add_argument("--nm", metavar="N:M",
                     help="keep N of every M consecutive entries of the last axis, e.g. 2:4")
    parser.add_argument("--global", dest="global_", action="store_true",
                        help="with --sparsity: one magnitude threshold across all pruned tensors")


def _parse_nm(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--nm: expected N:M such as 2:4, got {text!r}")
    n, m = int(match[1]), int(match[2])
    if m < 1 or n > m:
        raise UsageError(f"--nm: expected 0 <= N <= M and M >= 1, got {text!r}")
    return n, m


def _check_paths(source: str, output: str) -> None:
    """One-line errors for paths, before any work (no OSError text with temp-file names)."""
    if os.path.isdir(source):
        raise UsageError(f"{source}: is a directory, not a safetensors file")
    if not os.path.exists(source):
        raise UsageError(f"{source}: no such file")
    if os.path.isdir(output):
        raise UsageError(f"{output}: is a directory; -o takes the path of the file to write")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"{output}: cannot write, no such directory {folder}")


def run(args: argparse.Namespace) -> int:

    nm = _parse_nm(args.nm) if args.nm is not None else None
    if nm is None and not 0.0 <= args.sparsity <= 1.0:
        raise UsageError(f"--sparsity: expected a number in [0, 1], got {args.sparsity}")
    if args.global_ and nm is not None:
        raise UsageError("--global: only with --sparsity")
    _check_paths(args.input, args.output)
    try:
        tensors, metadata = st.read(args.input)
    except OSError as e:  # e.g. permission denied: the reason, without the errno prefix
        raise UsageError(f"{args.input}: cannot read ({e.strerror or e})") from None

    targets = {name: e.array() for name, e in tensors.items()
               if e.dtype in st.FLOAT_DTYPES and len(e.shape) >= 2}
    skipped: dict[str, str] = {}
    if nm is not None:
        for name in list(targets):
            if targets[name].shape[-1] % nm[1]:
                skipped[name] = f"last axis {targets[name].shape[-1]} not divisible by {nm[1]}"
                del targets[name]
    for name, w in targets.items():
        _first_nan(w, name)  # the mask functions would name it `w`: name the tensor
    if nm is not None:
        masks = {name: nm_mask(w, *nm) for name, w in targets.items()}
    elif args.global_:
        masks = global_magnitude_masks(targets, args.sparsity)
    else:
        masks = {name: magnitude_mask(w, args.sparsity) for name, w in targets.items()}
    if targets:
        _core.prune.apply_masks_([masks[n] for n in targets], [[w] for w in targets.values()],
                                 [[n] for n in targets])
    for name, w in targets.items():
        data = w.astype(w.dtype.newbyteorder("<")).tobytes()
        tensors[name] = st.Entry(tensors[name].dtype, tensors[name].shape, data)
    try:
        st.write(args.output, tensors, metadata)
    except OSError as e:  # its filename is the temporary file: report the output instead
        raise UsageError(f"{args.output}: cannot write ({e.strerror or e})") from None

    rows = []
    pruned_total = size_total = 0
    for name, e in tensors.items():
        size = math.prod(e.shape)
        if name in targets:
            zeros = size - int(np.count_nonzero(targets[name]))
            pruned_total += zeros
            size_total += size
            note = f"{zeros / size:8.2%}" if size else f"{'-':>8}"
        else:
            why = skipped.get(name) or ("not float" if e.dtype not in st.FLOAT_DTYPES else "< 2-D")
            note = f"{'kept':>8}  ({why})"
        rows.append((name, str(tuple(e.shape)), e.dtype, note))
    width = max([len(r[0]) for r in rows] + [6])
    swidth = max([len(r[1]) for r in rows] + [5])
    print(f"{'tensor':<{width}}  {'shape':<{swidth}}  {'dtype':<5}  {'sparsity':>8}")
    for name, shape, dtype, note in rows:
        print(f"{name:<{width}}  {shape:<{swidth}}  {dtype:<5}  {note}")
    share = pruned_total / size_total if size_total else 0.0
    print(f"total: {pruned_total} of {size_total} weights in {len(targets)} pruned tensors "
          f"are zero ({share:.2%}); wrote {args.output}")
    return 0
