"""quantize a checkpoint: GGUF (llama.cpp), compressed-tensors (vLLM, transformers) or slimgrad

Three outputs:

* ``--format gguf`` (default for a ``.gguf`` OUT): a file llama.cpp runs, from a
  Hugging Face model folder (or its ``model.safetensors`` with ``config.json`` next
  to it), BERT-family and llama-family: ``--type`` is llama.cpp's file type (``F16``,
  ``Q8_0``, ``Q4_0``, ..., ``Q4_K_M``, ``Q5_K_M``) with llama-quantize's per-tensor
  choices. A lone safetensors file without ``config.json`` gets the tensors only
  (``general.architecture = slimgrad``, not runnable by llama.cpp; ``Q8_0``/``Q5_x``/``Q4_x``).
* ``--format compressed-tensors``: OUT is a new folder with ``model.safetensors``
  (``weight_packed`` / ``weight_scale`` / ``weight_zero_point`` / ``weight_shape``;
  a sharded input gives the same shards and a new index), ``config.json`` with its
  ``quantization_config``, and the other files of the model folder; ``--bits``
  2..8, per output channel or ``--group-size``.
* ``--format safetensors`` (default otherwise): slimgrad's own layout, read back by
  ``slimgrad.quant.load``.

Tensors are read one at a time from the memory-mapped input and written as they are
made; a progress bar runs on stderr; the table lists every tensor (one format with
``slimgrad prune``).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = """examples:
  slimgrad quantize ./all-MiniLM-L6-v2 -o minilm-q8.gguf --type Q8_0
  slimgrad quantize ./Llama-3.2-1B -o llama-q4km.gguf --type Q4_K_M --imatrix imatrix.gguf
  slimgrad quantize ./model -o m.gguf --type Q4_K_M --tensor-type 'attn_v=Q8_0'
  slimgrad quantize ./all-MiniLM-L6-v2 -o minilm-int4 --format compressed-tensors --bits 4 \\
      --group-size 32
  slimgrad quantize model.safetensors -o q8.safetensors --bits 8 --exclude 'layer\\.0\\.'
"""

# options of the integer quantizer, and the value each has when not given
_INT_OPTIONS = {
    "bits": 8,
    "group_size": None,
    "asymmetric": False,
    "rounding": "half_even",
    "clip": "minmax",
    "nonfinite": "raise",
}
_GGUF_OPTIONS = ("type", "imatrix", "tensor_type", "token_embedding_type", "output_tensor_type")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1]
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "input",
        metavar="IN",
        help="model folder (config.json + model.safetensors, or its shards and index) "
        "or a .safetensors",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write (compressed-tensors: a new folder)",
    )
    parser.add_argument(
        "--format",
        choices=("safetensors", "gguf", "compressed-tensors"),
        help="output format (default: gguf for a .gguf OUT, else safetensors)",
    )
    g = parser.add_argument_group("GGUF (llama.cpp)")
    g.add_argument(
        "--type",
        metavar="TYPE",
        help="llama.cpp file type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_M "
        "Q5_K_M ... (default Q8_0)",
    )
    g.add_argument("--imatrix", metavar="FILE", help="llama.cpp importance matrix (K types)")
    g.add_argument(
        "--tensor-type",
        action="append",
        metavar="REGEX=TYPE",
        help="type for tensors whose GGUF name matches REGEX (repeatable)",
    )
    g.add_argument("--token-embedding-type", metavar="TYPE")
    g.add_argument("--output-tensor-type", metavar="TYPE")
    q = parser.add_argument_group("integer quantization (safetensors, compressed-tensors)")
    q.add_argument("--bits", type=int, help="2..8 (default 8)")
    q.add_argument(
        "--group-size",
        type=int,
        help="values per scale along the last axis (default: one scale per row)",
    )
    q.add_argument(
        "--asymmetric", action="store_true", default=None, help="unsigned codes with a zero point"
    )
    q.add_argument("--rounding", choices=("half_even", "half_away", "stochastic"))
    q.add_argument("--clip", choices=("minmax", "percentile", "mse"))
    q.add_argument(
        "--nonfinite",
        choices=("raise", "propagate"),
        help="a NaN/inf in a tensor: stop (default) or give its groups a NaN scale",
    )
    s = parser.add_argument_group("which tensors")
    s.add_argument(
        "--include",
        action="append",
        metavar="REGEX",
        help="also quantize matching tensors (by default embeddings, norms, biases, "
        "pooler and output head are kept)",
    )
    s.add_argument(
        "--exclude",
        action="append",
        metavar="REGEX",
        help="keep matching tensors unquantized (GGUF: as F32)",
    )


def _given(args: argparse.Namespace, names: Any) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, [])]


def _model_folder(path: str) -> Path | None:
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return folder if (folder / "config.json").exists() else None


def run(args: argparse.Namespace) -> int:
    from .._cli_common import UsageError, check_paths, refuse_gguf

    fmt = args.format or ("gguf" if args.output.endswith(".gguf") else "safetensors")
    if fmt == "gguf":
        wrong = _given(args, [n for n in _INT_OPTIONS if n != "bits"]) + _given(args, ["include"])
        if wrong:
            raise UsageError(
                f"{', '.join(wrong)}: not used by --format gguf (llama.cpp's block "
                "types fix rounding, clipping and grouping; choose --type, "
                "--tensor-type REGEX=TYPE, --exclude REGEX)"
            )
        if args.bits is not None:
            raise UsageError("--bits: not used by --format gguf; choose --type (Q8_0, Q4_K_M, ...)")
    else:
        wrong = _given(args, _GGUF_OPTIONS)
        if wrong:
            raise UsageError(f"{', '.join(wrong)}: only for --format gguf")
    for name, default in _INT_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 2 <= args.bits <= 8:
        raise UsageError(f"--bits: expected 2..8, got {args.bits}")
    if args.group_size is not None and args.group_size < 1:
        raise UsageError(f"--group-size: expected a positive integer, got {args.group_size}")
    check_paths(args.input, args.output, output_is_folder=fmt == "compressed-tensors")
    refuse_gguf(args.input, "quantize")
    if fmt == "gguf":
        return _run_gguf(args)
    return _run_integer(args, fmt)


# -- GGUF ------------------------------------------------------------------------------
def _run_gguf(args: argparse.Namespace) -> int:
    from .._cli_common import UsageError, compile_patterns, print_table
    from .._safetensors import model_files
    from . import gguf_mix
    from ._stream import open_safetensors
    from .gguf_export import export_gguf

    ftype = args.type or "Q8_0"
    if ftype not in gguf_mix.FILE_TYPES:
        raise UsageError(f"--type: expected one of {', '.join(gguf_mix.FILE_TYPES)}, got {ftype!r}")
    overrides = []
    for item in args.tensor_type or ():
        pattern, sep, t = item.rpartition("=")
        if not sep or not pattern or t not in gguf_mix.BLOCK:
            raise UsageError(
                f"--tensor-type {item!r}: expected REGEX=TYPE with TYPE one of "
                f"{', '.join(gguf_mix.BLOCK)}"
            )
        overrides.append((pattern, t))
    overrides = [
        (p.pattern, "F32") for p in compile_patterns("--exclude", args.exclude)
    ] + overrides
    compile_patterns("--tensor-type", [p for p, _ in overrides])
    for opt in ("token_embedding_type", "output_tensor_type"):
        t = getattr(args, opt)
        if t is not None and t not in gguf_mix.BLOCK:
            raise UsageError(
                f"--{opt.replace('_', '-')}: expected one of {', '.join(gguf_mix.BLOCK)}, got {t!r}"
            )
    folder = _model_folder(args.input)
    if folder is None:
        if os.path.isdir(args.input):
            raise UsageError(f"{args.input}: no config.json in this folder")
        return _run_gguf_tensors_only(args, ftype)
    _refuse_quantized_folder(args.input, "quantize")
    imatrix = _imatrix(args.imatrix) if args.imatrix else None
    total = 0
    for f in model_files(args.input)[1]:
        with open_safetensors(f) as src:
            total += len(src.tensors)
    rows = export_gguf(
        args.input,
        args.output,
        ftype,
        overrides=overrides,
        token_embedding_type=args.token_embedding_type,
        output_tensor_type=args.output_tensor_type,
        imatrix=imatrix,
        progress=_bar(total),
    )
    print_table(rows, f"GGUF {ftype}; wrote {args.output}")
    return 0


def _bar(total: int) -> Any:
    """A tqdm bar the export advances per tensor (None without tqdm)."""
    import sys

    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar = tqdm(
        total=total, desc="quantize", unit="tensor", file=sys.stderr, disable=None, leave=False
    )
    return lambda row: bar.update(1)


def _imatrix(path: str) -> dict[str, np.ndarray]:
    from .._cli_common import UsageError

    try:
        from .kquants import read_imatrix  # helper kquant's reader of llama.cpp's format
    except ImportError:
        raise UsageError(
            "--imatrix: needs slimgrad.quant.kquants (the K-quant kernels), which this build lacks"
        ) from None
    if not os.path.isfile(path):
        raise UsageError(f"--imatrix {path}: no such file")
    return read_imatrix(path)


def _refuse_quantized_folder(source: str, command: str) -> None:
    from .._cli_common import refuse_quantized
    from .._safetensors import model_files
    from ._stream import open_safetensors

    for f in model_files(source)[1]:
        with open_safetensors(f) as src:
            refuse_quantized(str(f), src.metadata, src.tensors, command)


def _run_gguf_tensors_only(args: argparse.Namespace, ftype: str) -> int:
    """A safetensors file without config.json: its tensors under their own names."""
    from .._cli_common import UsageError, print_table, progress, refuse_quantized
    from .._report import Row
    from . import gguf as sg
    from . import io
    from ._stream import open_safetensors

    if ftype not in sg.TYPES:
        raise UsageError(
            f"--type {ftype}: without config.json (a tensors-only GGUF) the types "
            f"are {', '.join(sg.TYPES)}; llama.cpp's mixes need the model folder"
        )
    rows, prepared = [], []
    with open_safetensors(args.input) as src:
        refuse_quantized(args.input, src.metadata, src.tensors, "quantize")
        for name, info in progress(src.tensors.items(), len(src.tensors), "quantize"):
            w = src.array(name)
            if not (w.ndim == 2 and info.dtype in io.FLOAT_CODES and w.size):
                t = io.gguf_plain(name, w)
            else:
                t = io.gguf_tensor(name, np.asarray(w), ftype)
            prepared.append(t)
            note = t.note or ("kept" if t.type != ftype else "")
            if t.type == ftype:
                back = sg.dequantize(t.array, ftype, info.shape)
                note = f"{_rel_error(np.asarray(w), back):.3e}"
            rows.append(Row(name, info.shape, info.dtype, t.type, info.nbytes, t.nbytes, note))
    io.write_gguf(args.output, prepared)
    print_table(
        rows,
        f"GGUF {ftype}, tensors only (no config.json: llama.cpp cannot run it); "
        f"wrote {args.output}",
    )
    return 0


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """``||w - w_hat|| / ||w||`` (sums in float64) for the report; ``w_hat``,
    a float32 temporary, is overwritten by the differences.

    The differences are taken in float32: exact wherever ``w_hat`` is within a
    factor 2 of ``w`` (Sterbenz), within 2**-24 relative elsewhere, for a
    figure printed to 4 digits. In float64 through NumPy (ml_dtypes' astype
    and fresh arrays) it took 0.3 s of a 45M-value bfloat16 tensor, 70 % of
    ``slimgrad quantize``'s time on a bfloat16 checkpoint.
    """
    from .. import _core
    from .._float32 import as_float32

    if w.dtype == np.float64 or w_hat.dtype != np.float32:
        w64 = w.astype(np.float64)
        norm = float(np.linalg.norm(w64))
        diff = float(np.linalg.norm(w64 - w_hat.astype(np.float64)))
    else:
        w32 = as_float32(w)
        norm = math.sqrt(_core.squared_norm(w32))
        diff = math.sqrt(_core.squared_norm(np.subtract(w32, w_hat, out=w_hat)))
    return diff / norm if norm else (0.0 if diff == 0 else float("inf"))


# -- integer: slimgrad safetensors / compressed-tensors -----------------------------------
def _run_integer(args: argparse.Namespace, fmt: str) -> int:
    from contextlib import ExitStack

    from .. import _safetensors as st
    from .._cli_common import UsageError, compile_patterns, print_table, refuse_quantized
    from . import compressed, io
    from ._stream import open_safetensors

    include = compile_patterns("--include", args.include)
    exclude = compile_patterns("--exclude", args.exclude)
    folder = _model_folder(args.input)
    if fmt == "compressed-tensors" and folder is None:
        raise UsageError(
            f"{args.input}: compressed-tensors output needs the model's "
            "config.json next to the weights"
        )
    if os.path.isdir(args.input) and fmt != "compressed-tensors":
        raise UsageError(
            f"{args.input}: is a directory, not a safetensors file (a model "
            "folder is read by --format gguf and compressed-tensors)"
        )
    _, files, index = st.model_files(args.input)
    with ExitStack() as stack:
        sources = [stack.enter_context(open_safetensors(str(p))) for p in files]
        for path, src in zip(files, sources):
            refuse_quantized(str(path), src.metadata, src.tensors, "quantize")
        output = _IntegerOutput(
            args,
            fmt,
            include,
            exclude,
            sum(len(src.tensors) for src in sources),
        )
        shards = [output.plan(src) for src in sources]
        if fmt == "compressed-tensors":
            names = [p.name for p in files] if index else ["model.safetensors"]
            # what transformers expects of a torch checkpoint: "format": "pt"
            written = [
                (name, shard, {**src.metadata, "format": "pt"})
                for name, shard, src in zip(names, shards, sources)
            ]
            compressed.write_folder(
                folder,
                args.output,
                written,
                index,
                output.targets,
                args.bits,
                not args.asymmetric,
                args.group_size,
            )
        else:
            meta = io._metadata(
                {**sources[0].metadata, "source": os.path.basename(args.input)}, output.specs
            )
            try:
                st.write(args.output, shards[0], meta)
            except OSError as e:
                raise UsageError(f"{args.output}: cannot write ({e.strerror or e})") from None
        output.close()
    print_table(output.table(), f"{output.scheme}, {fmt}; wrote {args.output}")
    return 0


class _IntegerOutput:
    """The output tensors of ``slimgrad quantize --format safetensors / compressed-tensors``,
    each quantized while the file is written (st.Deferred).

    :meth:`plan` lays out one input file's output from its header alone (every
    stored tensor's dtype and shape follows from the weight's shape and the
    options), so the header is written first and the process holds one
    quantized weight at a time, not the whole output (7 GB for a 7B model at
    int8). A weight is quantized when its first stored tensor is written; its
    other tensors follow it in the file.
    """

    def __init__(
        self, args: argparse.Namespace, fmt: str, include: Any, exclude: Any, total: int
    ) -> None:
        from .._cli_common import progress

        self.args, self.fmt, self.include, self.exclude = args, fmt, include, exclude
        self.scheme = f"int{args.bits}/{'asym' if args.asymmetric else 'sym'}/" + (
            f"g{args.group_size}" if args.group_size else "channel"
        )
        self.specs: dict[str, Any] = {}  # slimgrad's metadata, per quantized weight
        self.targets: list[str] = []  # compressed-tensors' quantized layers
        self._rows: dict[str, Any] = {}  # input name -> Row (a quantized one once made)
        self._stored: set[str] = set()
        self._made: dict[str, dict[str, np.ndarray]] = {}  # a weight's tensors not yet written
        self._ticks = progress(iter(range(total)), total, "quantize")

    def plan(self, src: Any) -> dict[str, Any]:
        """stored name -> st.Deferred for the input file ``src``, in file order."""
        import functools

        from .. import _safetensors as st
        from .._cli_common import UsageError, selected
        from .._report import Row
        from . import compressed, io
        from ._tensor import _spec

        args, out = self.args, {}

        def add(key: str, code: str, shape: Any, nbytes: int, make: Any) -> None:
            if key in self._stored:
                raise UsageError(
                    f"{src.path}: tensor {name!r}: the stored tensor {key!r} "
                    "is also another tensor's name"
                )
            self._stored.add(key)
            out[key] = st.Deferred(code, list(shape), nbytes, make)

        for name, info in src.tensors.items():
            ok, why = selected(name, self.include, self.exclude)
            matrix = len(info.shape) == 2 and info.dtype in io.FLOAT_CODES and 0 not in info.shape
            if self.fmt == "compressed-tensors" and not name.endswith(".weight"):
                matrix, why = False, why or "kept (not a layer weight)"
            if not (ok and matrix):
                reason = why if matrix else "kept (not a 2-D float tensor)"
                self._rows[name] = Row(
                    name, info.shape, info.dtype, info.dtype, info.nbytes, info.nbytes, reason
                )
                add(
                    name,
                    info.dtype,
                    info.shape,
                    info.nbytes,
                    functools.partial(self._kept, src, name),
                )
                continue
            self._rows[name] = None  # filled when it is quantized
            if self.fmt == "compressed-tensors":
                layout = compressed.layout(
                    name, info.shape, args.bits, not args.asymmetric, args.group_size
                )
                self.targets.append(name[: -len(".weight")])
            else:
                self.specs[name] = _spec(
                    info.shape,
                    args.bits,
                    not args.asymmetric,
                    "group" if args.group_size else "channel",
                    0,
                    args.group_size or 128,
                    st.DTYPES[info.dtype],
                )
                layout = io._stored_layout(name, self.specs[name])
            for key, (dt, shape) in layout.items():
                make = functools.partial(self._part, src, name, layout, key)
                add(key, st.code_of(dt), shape, dt.itemsize * math.prod(shape), make)
        return out

    def _kept(self, src: Any, name: str) -> memoryview | bytes:
        next(self._ticks, None)
        return src.raw(name)

    def _part(self, src: Any, name: str, layout: dict, key: str) -> memoryview | bytes:
        from .. import _safetensors as st

        if name not in self._made:
            self._made[name] = self._quantize(src, name)
        a = self._made[name].pop(key)
        if not self._made[name]:
            del self._made[name]
        if (a.dtype, a.shape) != layout[key]:  # a defect of layout(), never the input's fault
            raise RuntimeError(
                f"{key}: made {a.dtype.name} {a.shape}, the header says "
                f"{layout[key][0].name} {layout[key][1]}"
            )
        return st.to_entry(a, key).data

    def _quantize(self, src: Any, name: str) -> dict[str, np.ndarray]:
        """The stored tensors of the weight ``name``; fills its table row."""
        from .. import _core
        from .._float32 import as_float32
        from .._report import Row
        from . import compressed, io
        from ._tensor import quantize

        next(self._ticks, None)
        args, info = self.args, src.tensors[name]
        w = np.asarray(src.array(name))
        # Widened once, for the check, the quantizer and the report (a
        # float64 tensor is checked and reported on its own values).
        w32 = as_float32(w)
        exact = w if w.dtype == np.float64 else w32
        bad = _core.find_nonfinite(exact) if args.nonfinite == "raise" else -1
        if bad >= 0:
            raise ValueError(
                f"{name}: non-finite value {w.reshape(-1)[bad]} at index "
                f"{tuple(int(i) for i in np.unravel_index(bad, w.shape))} "
                "(--nonfinite propagate keeps going)"
            )
        qt = quantize(
            w32,
            args.bits,
            symmetric=not args.asymmetric,
            granularity="group" if args.group_size else "channel",
            group_size=args.group_size or 128,
            rounding=args.rounding,
            clip=args.clip,
            nonfinite=args.nonfinite,
        )
        qt.source_dtype = w.dtype.newbyteorder("=")  # what was quantized, not its float32 copy
        err = f"{_rel_error(exact, qt.dequantize()):.3e}"
        if self.fmt == "compressed-tensors":
            parts = compressed.tensors(name, qt)
        else:
            parts = io._layout({name: qt})[0]
            if qt.spec() != self.specs[name]:  # the header is written: it must hold
                raise RuntimeError(f"{name}: quantized as {qt.spec()}, the header says otherwise")
        size = sum(a.nbytes for a in parts.values())
        self._rows[name] = Row(name, info.shape, info.dtype, self.scheme, info.nbytes, size, err)
        return parts

    def close(self) -> None:
        next(self._ticks, None)  # closes the bar

    def table(self) -> list[Any]:
        return list(self._rows.values())
