"""compress a model with calibrated methods (GPTQ, AWQ, Wanda, SparseGPT)

``slimgrad compress MODEL_DIR -o OUT.safetensors --method gptq --bits 4
--group-size 128 [--prune wanda --sparsity 0.5 | --nm 2:4] [--calib FILE]
[--budget-bytes B]`` loads a Hugging Face BERT directory (config.json,
model.safetensors, tokenizer), collects each Linear layer's input statistics
on calibration sentences, compresses every Linear layer, prints a per-layer
table and the embedding cosine against the float model on held-out
sentences, and writes OUT: slimgrad's quantized safetensors (every other
parameter in float32), or with ``--format gguf`` / ``-o OUT.gguf`` a GGUF that
llama.cpp runs, whose quality it measures again from the file.

A llama-family folder (llama, mistral, qwen2; one file or shards) takes
``--method gptq`` or ``rtn``: its decoder layers are quantized one at a time
on the calibration text cut into ``--seq-len`` token windows (GPTQ's
sequential recipe), OUT is a compressed-tensors folder that transformers and
vLLM load (or, for llama and mistral, ``-o OUT.gguf``: the codes in llama.cpp's
blocks), and the held-out text's perplexity is printed for the float and the
quantized model.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import time
from collections.abc import Sequence

from .._cli_common import parse_nm, same_file
from ..errors import UsageError

MIN_CALIBRATION_SENTENCES = 16
MIN_CALIBRATION_TOKENS = 256
SENSITIVITY_SENTENCES = 32  # calibration sentences each layer's sensitivity is measured on

EXAMPLES = """examples:
  slimgrad compress MODEL_DIR -o q4.safetensors --method gptq --bits 4 --group-size 128
  slimgrad compress MODEL_DIR -o s50.safetensors --prune sparsegpt --sparsity 0.5 --bits 8
  slimgrad compress MODEL_DIR -o mixed.safetensors --budget-bytes 9000000 --calib my.txt
  slimgrad compress MODEL_DIR -o q4.gguf --method gptq --bits 4
  slimgrad compress ./Qwen2.5-0.5B -o ./Qwen2.5-0.5B-gptq-int4 --bits 4 --group-size 128
  slimgrad compress ./TinyLlama -o tinyllama-gptq-q4_0.gguf --bits 4 --calib my.txt
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (__doc__ or "").split("\n\n", 1)[1].replace("``", "")
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    from ._pipeline import METHODS, PRUNERS

    parser.add_argument(
        "model", metavar="MODEL_DIR", help="Hugging Face BERT or llama-family directory"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write (.safetensors, .gguf); for a llama-family model a new folder "
        "(compressed-tensors) or a .gguf",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="gptq", help="quantizer (default gptq)"
    )
    parser.add_argument("--bits", type=int, default=4, help="2..8 (default 4); 0 keeps float32")
    parser.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="inputs per scale (default 128; 32 with --format gguf, whose blocks store a "
        "scale per 32 anyway; 0: per row)",
    )
    parser.add_argument("--prune", choices=PRUNERS, default=None, help="prune before quantizing")
    parser.add_argument(
        "--sparsity", type=float, default=None, help="fraction pruned (with --prune)"
    )
    parser.add_argument(
        "--nm", default=None, metavar="N:M", help="keep N of every M (with --prune)"
    )
    parser.add_argument("--calib", metavar="FILE", help="calibration text, one sentence per line")
    parser.add_argument("--heldout", metavar="FILE", help="held-out sentences for the quality line")
    parser.add_argument(
        "--budget-bytes",
        type=int,
        default=None,
        help="choose 2/3/4/8 bits (gguf: 4/5/8) per layer to lose the least quality within "
        "this many bytes of Linear weights (measures each layer's sensitivity first)",
    )
    parser.add_argument(
        "--imatrix-out",
        metavar="FILE",
        help="also write the calibration as llama.cpp's GGUF imatrix (for --imatrix of "
        "'slimgrad quantize' or llama-quantize)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="also write the per-layer sensitivity (2/3/4/8 bits, gguf: 4/5/8; one layer at "
        "a time) as a plot",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="llama-family models: tokens per calibration and held-out window (default 512)",
    )
    parser.add_argument(
        "--format",
        choices=("safetensors", "gguf"),
        default=None,
        help="safetensors (slimgrad's quantized tensors) or gguf (llama.cpp: the codes in "
        "Q4_1/Q5_1/Q8_0 blocks, the rest as llama.cpp's converter writes it); default: by "
        "-o's extension",
    )


def _sentences(path: str | None, default: str, label: str) -> list[str]:
    if path is None:
        text = (
            importlib.resources.files("slimgrad.compress")
            .joinpath("data", default)
            .read_text("utf-8")
        )
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise UsageError(f"{label} {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{label} {path}: cannot read ({e})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _nm(text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_nm(text)


def _recipe(args: argparse.Namespace, bits: int | None = None):  # noqa: ANN202
    from ._pipeline import Recipe

    bits = (args.bits or None) if bits is None else bits
    return Recipe(
        method=args.method,
        bits=bits,
        group_size=_group_size(args) or None,
        prune=args.prune,
        sparsity=args.sparsity,
        nm=_nm(args.nm),
        # GGUF's only 8-bit block (Q8_0) is symmetric; lower widths fit Q4_1/Q5_1/Q8_0 as is
        symmetric=_format(args) == "gguf" and bits == 8,
    )


def _group_size(args: argparse.Namespace) -> int:
    if args.group_size is not None:
        return args.group_size
    return 32 if _format(args) == "gguf" else 128


def _format(args: argparse.Namespace) -> str:
    """--format, or by -o's extension (.gguf: gguf, else safetensors)."""
    if args.format:
        return args.format
    return "gguf" if args.output.lower().endswith(".gguf") else "safetensors"


def _check(args: argparse.Namespace) -> None:
    """Every argument that can be checked before loading anything."""
    if args.bits != 0 and not 2 <= args.bits <= 8:
        raise UsageError(f"--bits: expected 2..8 (or 0 for float32), got {args.bits}")
    if args.group_size is not None and args.group_size < 0:
        raise UsageError(f"--group-size: expected >= 0, got {args.group_size}")
    if _format(args) == "gguf" and _group_size(args) % 32:
        raise UsageError(
            f"--group-size {args.group_size}: GGUF blocks hold 32 values; give a multiple of 32 "
            "(or 0, one scale per row)"
        )
    if args.prune is None and (args.sparsity is not None or args.nm is not None):
        raise UsageError("--sparsity/--nm: only with --prune")
    if args.prune is not None and (args.sparsity is None) == (args.nm is None):
        raise UsageError("--prune: give either --sparsity or --nm")
    if args.sparsity is not None and not 0.0 <= args.sparsity < 1.0:
        raise UsageError(f"--sparsity: expected a fraction in [0, 1), got {args.sparsity}")
    _nm(args.nm)
    if args.budget_bytes is not None and args.budget_bytes <= 0:
        raise UsageError(
            f"--budget-bytes: expected a positive number of bytes, got {args.budget_bytes}"
        )
    if (args.budget_bytes is not None or args.plot) and args.bits == 0:
        raise UsageError("--budget-bytes/--plot: measure bit widths; not with --bits 0")
    if args.plot and os.path.isdir(args.plot):
        raise UsageError(f"--plot {args.plot}: is a directory; give the path of the image to write")
    if not os.path.isdir(args.model):
        raise UsageError(f"{args.model}: not a directory (expected a Hugging Face BERT folder)")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(args.output):
        raise UsageError(f"{args.output}: is a directory; -o takes the path of the file to write")
    if not os.path.isdir(out_dir):
        raise UsageError(f"{args.output}: cannot write, no such directory {out_dir}")
    weights = os.path.join(args.model, "model.safetensors")
    if os.path.exists(weights) and same_file(args.output, weights):
        raise UsageError(f"-o {args.output}: is the model's own weights file; write elsewhere")


# bit widths the sensitivity scan and the budget allocator choose from; in GGUF
# 2..4-bit codes all take Q4_1 blocks, so only widths of different sizes count
WIDTHS = {"safetensors": (2, 3, 4, 8), "gguf": (4, 5, 8)}


def _stored_bytes(args: argparse.Namespace, shape: tuple[int, int], bits: int) -> int:
    """Bytes of one Linear weight at ``bits`` in the output format (the budget's unit)."""
    rows, cols = shape
    if _format(args) == "gguf":
        from ..quant import gguf

        block = gguf.block_type(bits, _recipe(args, bits).symmetric)
        return rows * (cols // gguf.BLOCK_SIZE) * gguf.TYPE_SIZE[block]
    group_size = _group_size(args)
    groups = -(-cols // group_size) if group_size else 1  # a float32 scale + int32 zero each
    return rows * -(-cols * bits // 8) + rows * groups * 8


def _table(reports: Sequence) -> str:
    lines = [
        f"{'layer':<44} {'shape':>11} {'method':>8} {'bits':>4} {'kept':>6} {'bytes':>9} "
        f"{'out err':>9} {'s':>6}"
    ]
    for r in reports:
        bits = r.recipe.bits or 32
        method = r.recipe.method if r.recipe.bits else "-"
        lines.append(
            f"{r.name:<44} {f'{r.shape[0]}x{r.shape[1]}':>11} {method:>8} "
            f"{bits:>4} {r.kept:>6.1%} {r.nbytes:>9} {r.error:>9.2e} {r.seconds:>6.2f}"
        )
    return "\n".join(lines)


def _model_type(folder: str) -> str | None:
    import json

    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None  # the BERT loader reports it
    return cfg.get("model_type") if isinstance(cfg, dict) else None


def run(args: argparse.Namespace) -> int:
    from ..models.llama import ARCHITECTURES

    if os.path.isdir(args.model) and _model_type(args.model) in ARCHITECTURES:
        return _run_llama(args)
    if args.seq_len is not None:
        raise UsageError("--seq-len: only for llama-family models")
    _check(args)
    recipe = _recipe(args)
    calib_text = _sentences(args.calib, "calibration.txt", "--calib")
    heldout = _sentences(args.heldout, "heldout.txt", "--heldout")
    if len(calib_text) < MIN_CALIBRATION_SENTENCES:
        raise UsageError(
            f"--calib: expected at least {MIN_CALIBRATION_SENTENCES} sentences (one per line), "
            f"got {len(calib_text)}"
        )
    if not heldout:
        raise UsageError("--heldout: no sentences")

    from tqdm import tqdm

    from .. import quant
    from ..models import bert
    from ..models.calibration import calibrate
    from ._model import choose_bits, compress, layer_weights, quality, sensitivity
    from ._pipeline import Recipe

    started = time.perf_counter()
    model = bert.load(args.model)
    layers = layer_weights(model)
    widths = WIDTHS[_format(args)]
    if args.budget_bytes is not None:
        need = sum(_stored_bytes(args, w.shape, widths[0]) for w, _ in layers.values())
        if args.budget_bytes < need:
            raise UsageError(
                f"--budget-bytes: {args.budget_bytes} is below the smallest model "
                f"(all layers at {widths[0]} bits: {need} bytes)"
            )
    tokens = sum(len(e.ids) for e in model.tokenizer.encode_batch(calib_text))
    if tokens < MIN_CALIBRATION_TOKENS:
        raise UsageError(
            f"--calib: expected at least {MIN_CALIBRATION_TOKENS} tokens, got {tokens}"
        )
    reference = model.encode(heldout)
    print(f"calibrating on {len(calib_text)} sentences ({tokens} tokens)...", file=sys.stderr)
    calib = calibrate(model, calib_text)
    if args.imatrix_out:
        from ._model import write_imatrix

        write_imatrix(calib, args.imatrix_out, model.model.config.num_hidden_layers)
        print(f"wrote {args.imatrix_out}")

    def bar(names, desc):  # noqa: ANN001, ANN202
        return tqdm(names, desc=desc, unit="layer", file=sys.stderr, leave=False)

    recipes: Recipe | dict[str, Recipe] = recipe
    if args.budget_bytes is not None or args.plot:
        options = [_recipe(args, b) for b in widths]
        # measured on calibration sentences: the held-out ones stay unseen by the choice
        probe = calib_text[:: max(1, len(calib_text) // SENSITIVITY_SENTENCES)]
        drops, sizes = sensitivity(
            model,
            calib,
            options,
            probe,
            model.encode(probe),
            progress=lambda n: bar(n, "sensitivity"),
        )
        if _format(args) == "gguf":  # the file's bytes, not slimgrad's packed codes
            sizes = {n: [_stored_bytes(args, layers[n][0].shape, b) for b in widths] for n in sizes}
        print(_sensitivity_table(drops, options))
        chosen = None
        if args.budget_bytes is not None:
            recipes = choose_bits(drops, sizes, options, args.budget_bytes)
            chosen = {n: options.index(r) for n, r in recipes.items()}
        if args.plot:
            from ._plot import plot_sensitivity

            plot_sensitivity(drops, [f"{o.bits} bit" for o in options], args.plot, chosen)
            print(f"wrote {args.plot}")
    result = compress(model, calib, recipes, progress=lambda n: bar(n, "compressing"))
    for r in result.reports if _format(args) == "gguf" else ():
        if r.recipe.bits:
            r.nbytes = _stored_bytes(args, r.shape, r.recipe.bits)
    print(_table(result.reports))
    c = quality(model, result, heldout, reference)
    total = sum(r.nbytes for r in result.reports)
    dense = sum(w.nbytes for w, _ in layers.values())
    print(
        f"Linear weights: {total} bytes ({total / dense:.1%} of float32 {dense}); "
        f"held-out embedding cosine vs float: min {c.min():.4f}, mean {c.mean():.4f} "
        f"over {len(heldout)} sentences; {time.perf_counter() - started:.1f} s"
    )
    if _format(args) == "gguf":
        from ._gguf import gguf_quality, write_gguf

        write_gguf(args.model, args.output, result)
        c = gguf_quality(model, args.output, heldout, reference)
        print(
            f"wrote {args.output}; as read back from the file (float16 block scales): "
            f"min cosine {c.min():.4f}, mean {c.mean():.4f}"
        )
        return 0
    tensors: dict[str, object] = dict(model.model.parameters())
    for name, stored in result.stored.items():
        tensors[f"{name}.weight"] = stored
    for name, value in result.folded.items():
        tensors[name] = value
    quant.save(args.output, tensors, {"slimgrad.compress": _describe(recipes)})
    print(f"wrote {args.output}")
    return 0


DEFAULT_SEQ_LEN = 512


def _run_llama(args: argparse.Namespace) -> int:
    """A llama-family folder: GPTQ / RTN layer by layer into a compressed-tensors
    folder or a GGUF."""
    from .._cli_common import check_paths, refuse_quantized
    from ._pipeline import Recipe

    refused = [
        flag
        for flag, given in (
            ("--prune", args.prune),
            ("--sparsity", args.sparsity is not None),
            ("--nm", args.nm),
            ("--budget-bytes", args.budget_bytes is not None),
            ("--plot", args.plot),
            ("--imatrix-out", args.imatrix_out),
        )
        if given
    ]
    if refused:
        raise UsageError(
            f"{', '.join(refused)}: not for llama-family models yet (they take --method, "
            "--bits, --group-size, --calib, --heldout, --seq-len; OUT is a compressed-tensors "
            "folder or a .gguf)"
        )
    if args.method not in ("gptq", "rtn"):
        raise UsageError(
            f"--method {args.method}: llama-family models take gptq or rtn (AWQ's scales are "
            "folded for BERT-family models only)"
        )
    if not 2 <= args.bits <= 8:
        raise UsageError(f"--bits: expected 2..8 for a llama-family model, got {args.bits}")
    if args.group_size is not None and args.group_size < 0:
        raise UsageError(f"--group-size: expected >= 0, got {args.group_size}")
    gguf = _format(args) == "gguf"
    if gguf and _group_size(args) % 32:
        raise UsageError(
            f"--group-size {args.group_size}: GGUF blocks hold 32 values; give a multiple of 32"
        )
    if gguf and _model_type(args.model) not in ("llama", "mistral"):
        raise UsageError(
            f"--format gguf: the GGUF export takes llama and mistral, not "
            f"{_model_type(args.model)}; write a compressed-tensors folder instead"
        )
    seq_len = DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len
    if seq_len < 2:
        raise UsageError(f"--seq-len: expected at least 2 tokens, got {seq_len}")
    check_paths(args.model, args.output, output_is_folder=not gguf)
    calib_text = _sentences(args.calib, "calibration.txt", "--calib")
    heldout = _sentences(args.heldout, "heldout.txt", "--heldout")

    from tokenizers import Tokenizer
    from tqdm import tqdm

    from ..models import llama
    from ._llama import Sequential, gguf_perplexity, token_windows, write_folder, write_gguf

    started = time.perf_counter()
    try:
        checkpoint = llama.Checkpoint(args.model)
        for path, src in zip(checkpoint.files, checkpoint.sources):
            refuse_quantized(str(path), src.metadata, src.tensors, "compress")
        checkpoint.check()
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if gguf and checkpoint.config.rope_llama3 is not None:
        raise UsageError(
            "--format gguf: the GGUF export does not write llama 3's rotary rescaling "
            "(llama.cpp's rope_freqs); write a compressed-tensors folder instead"
        )
    window = checkpoint.config.sliding_window
    if window is not None and seq_len > window:
        raise UsageError(
            f"--seq-len {seq_len}: longer than the model's sliding attention window "
            f"({window}); give at most {window}"
        )
    path = os.path.join(args.model, "tokenizer.json")
    if not os.path.exists(path):
        raise UsageError(f"{args.model}: no tokenizer.json (the calibration text is tokenized)")
    tokenizer = Tokenizer.from_file(path)
    windows = {}
    for label, lines in (("--calib", calib_text), ("--heldout", heldout)):
        windows[label] = token_windows(tokenizer, lines, seq_len)
        if not len(windows[label]):
            raise UsageError(
                f"{label}: the text is shorter than one window of --seq-len {seq_len} tokens"
            )
    group = _group_size(args)  # 128; 32 for GGUF, whose blocks hold 32 values
    # symmetric codes, as llm-compressor's W4A16 preset: what vLLM's int kernels
    # take, and what GGUF's Q4_0 / Q5_0 / Q8_0 blocks hold
    recipe = Recipe(method=args.method, bits=args.bits, group_size=group or None, symmetric=True)
    layers = checkpoint.config.num_layers
    calib_ids = windows["--calib"]
    print(
        f"calibrating on {calib_ids.shape[0]} windows of {seq_len} tokens, "
        f"{layers} layers one at a time...",
        file=sys.stderr,
    )
    bar = tqdm(total=layers, desc="compressing", unit="layer", file=sys.stderr, leave=False)
    sequential = Sequential(
        checkpoint, recipe, calib_ids, windows["--heldout"], lambda i: bar.update()
    )
    try:
        if gguf:
            write_gguf(checkpoint, sequential, args.output)
        else:
            write_folder(checkpoint, sequential, args.output, recipe)
    except OSError as e:
        raise UsageError(f"{args.output}: cannot write ({e.strerror or e})") from None
    finally:
        bar.close()
    print(_table(sequential.reports))
    before, after = sequential.perplexities()
    total = sum(r.nbytes for r in sequential.reports)
    dense = sum(r.shape[0] * r.shape[1] * 2 for r in sequential.reports)
    print(
        f"Linear weights: {total} bytes ({total / dense:.1%} of 16-bit {dense}); held-out "
        f"perplexity: float {before:.3f}, {args.method} int{args.bits} {after:.3f} over "
        f"{windows['--heldout'].shape[0]} windows of {seq_len} tokens; "
        f"{time.perf_counter() - started:.1f} s"
    )
    if gguf:
        read_back = gguf_perplexity(checkpoint, args.output, windows["--heldout"])
        print(
            f"wrote {args.output}; as read back from the file (float16 block scales; the "
            f"embedding and head as llama-quantize types them): perplexity {read_back:.3f}"
        )
        return 0
    print(f"wrote {args.output}")
    return 0


def _describe(recipes: object) -> str:
    import json
    from dataclasses import asdict

    if isinstance(recipes, dict):
        return json.dumps({k: asdict(v) for k, v in recipes.items()})
    return json.dumps(asdict(recipes))  # type: ignore[call-overload]


def _sensitivity_table(drops: dict[str, list[float]], options: Sequence) -> str:
    head = f"{'sensitivity (1 - min cosine), one layer at a time':<52}" + "".join(
        f"{f'{o.bits} bit':>10}" for o in options
    )
    rows = [head] + [
        f"{name:<52}" + "".join(f"{d:>10.5f}" for d in ds) for name, ds in drops.items()
    ]
    return "\n".join(rows)
