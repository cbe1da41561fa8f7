"""GGUF files llama.cpp loads and runs, from a Hugging Face checkpoint folder.

:func:`export_gguf` reads ``config.json``, the tokenizer files and the
safetensors weights of a BERT-family encoder (``model_type`` ``bert``) or a
llama-family decoder (``llama``, ``mistral``) and writes what llama.cpp's own
``convert_hf_to_gguf.py`` + ``llama-quantize`` write:

* ``general.architecture`` (``bert`` / ``llama``), the hyperparameters llama.cpp
  reads (``<arch>.block_count``, ``context_length``, ``embedding_length``,
  ``feed_forward_length``, ``attention.head_count[_kv]``, the norm epsilon,
  RoPE settings; for BERT the token-type count and the sentence-transformers
  pooling, 1 = mean), ``general.file_type`` and ``general.quantization_version``;
* the tokenizer: BERT's WordPiece vocabulary as the converter rewrites it
  (``"▁"`` before word-initial tokens, ``"##"`` removed, special tokens of
  type 3), llama's through the ``gguf`` package's vocabulary readers
  (sentencepiece ``tokenizer.model``, or ``tokenizer.json`` byte-level BPE with
  its merges), special ids and add-bos/eos flags through ``gguf.SpecialVocab``;
* tensor names from ``gguf.get_tensor_name_map``; llama's q/k projections
  permuted to GGML's RoPE layout as the converter does; the pooler,
  ``position_ids`` and rotary caches are not written;
* per-tensor types from :func:`slimgrad.quant.gguf_mix.choose_types`.

Tensors are read one at a time from the memory-mapped safetensors and written
straight into the file (header first, sizes known in advance), so memory stays
near the largest tensor. The file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from .._float32 import as_float32
from .._report import Row
from .._safetensors import model_files
from . import gguf_mix
from ._stream import Source, open_safetensors

__all__ = ["ARCHES", "export_gguf"]

ARCHES = {"bert": "BERT", "llama": "LLAMA", "mistral": "LLAMA"}  # HF model_type -> MODEL_ARCH
# checkpoint entries llama.cpp has no tensor for: never written
_SKIP = re.compile(r"(^|\.)position_ids$|^pooler\.|^cls\.|rotary_emb\.inv_freq$")


@dataclass
class _Plan:
    source: Source
    hf_name: str
    name: str
    shape: tuple[int, ...]
    choice: gguf_mix.Choice
    given: Replacement | None = None


# What export_gguf(replace=...) takes for a checkpoint tensor: new float values
# (written as the file type says), or blocks already in a GGUF type.
Replacement = np.ndarray | tuple[str, np.ndarray]


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such file (GGUF export needs the model's config.json next to the weights)"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    arch = cfg.get("model_type")
    if arch not in ARCHES:
        raise ValueError(f"{path}: model_type: expected one of {', '.join(ARCHES)}, got {arch!r}")
    missing = [k for k in _REQUIRED if not isinstance(cfg.get(k), int)]
    if missing:
        raise ValueError(f"{path}: needs the integer(s) {', '.join(missing)} for the GGUF header")
    return cfg


# hyperparameters every supported architecture's header is built from
_REQUIRED = (
    "max_position_embeddings",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


def _hf_name(arch: str, name: str) -> str:
    return name[len("bert.") :] if arch == "bert" and name.startswith("bert.") else name


def _rope_heads(name: str, cfg: dict[str, Any]) -> int:
    """The heads whose rows :func:`_permute` reorders for the GGUF tensor
    ``name`` (llama / mistral q and k), else 0."""
    if cfg.get("model_type") not in ("llama", "mistral"):
        return 0
    if name.endswith(("attn_q.weight", "attn_q.bias")):
        return cfg["num_attention_heads"]
    if name.endswith(("attn_k.weight", "attn_k.bias")):
        return cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    return 0


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows to GGML's interleaved RoPE pairs (the converter's permute)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`_permute`: GGML's interleaved pairs back to HF's halves."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# -- metadata --------------------------------------------------------------------------
def _pooling(folder: Path) -> int | None:
    """sentence-transformers pooling as llama.cpp's pooling type (1 mean, 2 cls, 3 last)."""
    try:
        with open(folder / "modules.json", encoding="utf-8") as f:
            modules = json.load(f)
        path = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        with open(folder / path / "config.json", encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, StopIteration, KeyError, ValueError):
        return None
    for key, value in (
        ("pooling_mode_mean_tokens", 1),
        ("pooling_mode_cls_token", 2),
        ("pooling_mode_lasttoken", 3),
    ):
        if cfg.get(key):
            return value
    return None


def _bert_vocab(folder: Path, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens and types as convert_hf_to_gguf writes a WordPiece vocabulary."""
    import gguf

    added: dict[int, bool] = {}  # id -> special
    tj = folder / "tokenizer.json"
    if tj.exists():
        with open(tj, encoding="utf-8") as f:
            tok = json.load(f)
        if tok["model"]["type"] != "WordPiece":
            raise ValueError(f"{tj}: expected a WordPiece tokenizer, got {tok['model']['type']}")
        vocab = {v: k for k, v in tok["model"]["vocab"].items()}
        for a in tok.get("added_tokens") or []:
            vocab[a["id"]] = a["content"]
            added[a["id"]] = bool(a.get("special"))
    elif (folder / "vocab.txt").exists():
        with open(folder / "vocab.txt", encoding="utf-8") as f:
            vocab = dict(enumerate(line.rstrip("\n") for line in f))
        added = {
            i: True for i, t in vocab.items() if re.fullmatch(r"\[(PAD|UNK|CLS|SEP|MASK)\]", t)
        }
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt")
    n = max(n_vocab, max(vocab) + 1)
    tokens, types = [], []
    for i in range(n):
        if i not in vocab:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.USER_DEFINED)
        elif added.get(i):
            tokens.append(vocab[i])
            types.append(gguf.TokenType.CONTROL)
        else:  # the converter's "phantom space": ▁ starts a word, ## continues one
            t = vocab[i]
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _write_bert(w: Any, cfg: dict[str, Any], folder: Path) -> None:
    import gguf

    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg.get("layer_norm_eps", 1e-12))
    w.add_causal_attention(False)
    pooling = _pooling(folder)
    if pooling is not None:
        w.add_pooling_type(gguf.PoolingType(pooling))
    tokens, types = _bert_vocab(folder, cfg["vocab_size"])
    w.add_vocab_size(len(tokens))
    w.add_token_type_count(cfg.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")  # WordPiece splits words itself
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(
        folder, special_token_types=tuple(_BERT_SPECIALS), n_vocab=len(tokens)
    )
    # A folder with only vocab.txt names no special tokens: take BertTokenizer's
    # defaults ([CLS] x [SEP]), as transformers does; llama.cpp aborts on a BERT
    # vocabulary without a bos ([CLS]) id.
    for kind, token in _BERT_SPECIALS.items():
        if kind not in special.special_token_ids and token in tokens:
            special.special_token_ids[kind] = tokens.index(token)
            if kind in ("bos", "eos"):
                special.add_special_token.setdefault(kind, True)
    special.add_to_gguf(w, quiet=True)


# BertTokenizer's special tokens by GGUF kind (GGUF has no CLS key: llama.cpp uses bos)
_BERT_SPECIALS = {
    "bos": "[CLS]",
    "eos": "[SEP]",
    "unk": "[UNK]",
    "sep": "[SEP]",
    "pad": "[PAD]",
    "mask": "[MASK]",
}


def _write_llama(w: Any, cfg: dict[str, Any], folder: Path) -> None:
    import gguf
    from gguf import vocab as gv

    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.get("num_key_value_heads", n_head))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    # transformers 5 writes rope_parameters (rope_theta inside), earlier ones
    # rope_theta and rope_scaling at the top
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    w.add_rope_freq_base(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    kind = rope.get("rope_type", rope.get("type"))
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif kind not in (None, "default"):
        raise ValueError(
            f"{folder / 'config.json'}: rope_scaling type {kind!r} is not "
            "supported by slimgrad's GGUF export (only linear)"
        )
    if (folder / "tokenizer.model").exists():
        vocab: Any = gv.SentencePieceVocab(folder)  # needs the sentencepiece package
        merges = False
    else:
        try:
            vocab, merges = gv.BpeVocab(folder), True
        except FileNotFoundError:
            vocab, merges = gv.LlamaHfVocab(folder), False  # SPM-style BPE; needs transformers
    tokens, scores, types = [], [], []
    for text, score, ttype in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(int(ttype))
    n_vocab = cfg.get("vocab_size", len(tokens))
    for i in range(len(tokens), n_vocab):  # embedding rows without a token
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model(vocab.tokenizer_model)
    if vocab.tokenizer_model == "gpt2":
        w.add_tokenizer_pre(_bpe_pre(folder))
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=merges, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)


_LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"


def _bpe_pre(folder: Path) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE: llama-3's split regex or the default."""
    try:
        with open(folder / "tokenizer.json", encoding="utf-8") as f:
            pre = json.load(f).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return "default"
    return (
        "llama-bpe"
        if _LLAMA3_SPLIT in json.dumps(pre, ensure_ascii=False).replace("\\\\", "\\")
        else "default"
    )


# -- export ----------------------------------------------------------------------------
def _plan(
    arch: str,
    cfg: dict[str, Any],
    sources: Sequence[Source],
    ftype: str,
    choose: Callable[..., dict[str, gguf_mix.Choice]],
    replace: Mapping[str, Replacement],
) -> tuple[list[_Plan], list[Row]]:
    import gguf

    n_layer = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[ARCHES[arch]], n_layer)
    found: list[tuple[Source, str, str, tuple[int, ...]]] = []
    skipped: list[Row] = []
    for src in sources:
        for hf, info in src.tensors.items():
            base = _hf_name(arch, hf)
            if _SKIP.search(base):
                skipped.append(
                    Row(
                        hf,
                        info.shape,
                        info.dtype,
                        "-",
                        info.nbytes,
                        0,
                        "not written (llama.cpp has no such tensor)",
                    )
                )
                continue
            name = tmap.get_name(base, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(
                    f"{src.path}: tensor {hf!r} has no llama.cpp name for "
                    f"architecture {ARCHES[arch].lower()}"
                )
            found.append((src, hf, name, info.shape))
    unknown = sorted(set(replace) - {_hf_name(arch, hf) for _, hf, _, _ in found})
    if unknown:
        raise ValueError(f"replace: {unknown[0]!r} is not a tensor of the checkpoint")
    choices = choose([(n, s) for _, _, n, s in found])
    plans = []
    for src, hf, n, shape in found:
        given = replace.get(_hf_name(arch, hf))
        choice = choices[n]
        if given is not None:
            choice = _given_choice(hf, shape, given)
        plans.append(_Plan(src, hf, n, shape, choice, given))
    return plans, skipped


def _given_choice(hf: str, shape: tuple[int, ...], given: Replacement) -> gguf_mix.Choice:
    """The type of a replacement, after checking it fits the checkpoint's tensor."""
    if isinstance(given, tuple):
        kind, blocks = given
        if kind not in gguf_mix.available() or kind in ("F32", "F16", "BF16"):
            raise ValueError(f"replace[{hf!r}]: expected a GGUF block type, got {kind!r}")
        if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8:
            got = getattr(blocks, "dtype", type(blocks).__name__)
            raise TypeError(f"replace[{hf!r}]: expected uint8 blocks, got {got}")
        if blocks.nbytes != _nbytes(shape, kind):
            raise ValueError(
                f"replace[{hf!r}]: {blocks.nbytes} bytes, expected {_nbytes(shape, kind)} "
                f"for {kind} of shape {shape}"
            )
        return gguf_mix.Choice(kind, "given blocks")
    if not isinstance(given, np.ndarray) or given.shape != tuple(shape):
        got = getattr(given, "shape", type(given).__name__)
        raise ValueError(f"replace[{hf!r}]: expected an array of shape {shape}, got {got}")
    return gguf_mix.Choice("F32", "given values")


def _nbytes(shape: tuple[int, ...], type: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type]]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * size


def _convert(
    p: _Plan, cfg: dict[str, Any], imatrix: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, str]:
    """(array the writer gets, note) for one planned tensor."""
    heads = _rope_heads(p.name, cfg)
    if isinstance(p.given, tuple):  # blocks: each row's bytes move with the row
        blocks = np.ascontiguousarray(p.given[1])
        if heads:
            rows = blocks.reshape(p.shape[0], -1)
            blocks = np.ascontiguousarray(_permute(rows, heads)).reshape(blocks.shape)
        return blocks, ""
    w = np.asarray(p.source.array(p.hf_name) if p.given is None else p.given)
    if w.dtype.kind not in "f" and w.dtype.name != "bfloat16":
        raise ValueError(
            f"{p.source.path}: tensor {p.hf_name!r} is {w.dtype.name}, expected floating point"
        )
    w = as_float32(w)
    if heads:
        w = _permute(w, heads)
    t = p.choice.type
    if t == "F32":
        return np.ascontiguousarray(w), ""
    # Rounded to nearest even on the threads (NumPy's astype: 6-15 ms per
    # 16M values, most of a half-precision export's CPU time).
    if t == "F16":
        return _core.narrow_half(np.ascontiguousarray(w), False).view(np.float16), ""
    if t == "BF16":
        return _core.narrow_half(np.ascontiguousarray(w), True), ""
    w = np.ascontiguousarray(w)
    bad = _core.find_nonfinite(w)
    if bad >= 0:
        raise ValueError(
            f"{p.source.path}: tensor {p.hf_name!r}: non-finite value "
            f"{w.reshape(-1)[bad]} at flat index {bad}"
        )
    imp = None if imatrix is None else imatrix.get(p.name)
    blocks = gguf_mix.quantize_blocks(w, t, imp, label=p.hf_name)
    err = _rel_error(w, blocks, t)
    return blocks, f"{err:.3e}"


def _file_type(ftype: str, plans: Sequence[_Plan]) -> str:
    """``ftype``, or the most common type of the given blocks when there are some."""
    given = [p.choice.type for p in plans if isinstance(p.given, tuple)]
    return max(sorted(set(given)), key=given.count) if given else ftype


def _rel_error(w: np.ndarray, blocks: np.ndarray, type: str, rows: int = 1024) -> float:
    """||w - dequant|| / ||w|| of C-contiguous float32 ``w``, in chunks of rows
    (no second full-size float copy).

    The differences are float32 (exact wherever the dequantized value is
    within a factor 2 of w, Sterbenz; 2**-24 relative elsewhere), summed in
    float64 by slimgrad's squared_norm. NumPy float64 chunks took 5.3 s of a
    2.2 GB bfloat16 llama's 8.8 s export to Q8_0 (seventeenth session).
    """
    w2 = w.reshape(-1, w.shape[-1])
    b2 = blocks.reshape(w2.shape[0], -1)
    num = 0.0
    for i in range(0, w2.shape[0], rows):
        chunk = w2[i : i + rows]
        back = gguf_mix.dequantize_blocks(np.ascontiguousarray(b2[i : i + rows]), type, chunk.shape)
        back = np.require(back, np.float32, ["C", "W"])  # a writable float32 temporary
        num += _core.squared_norm(np.subtract(chunk, back, out=back))
    den = _core.squared_norm(w2)
    return (num / den) ** 0.5 if den else 0.0


def export_gguf(
    source: str | os.PathLike,
    output: str | os.PathLike,
    ftype: str = "F16",
    *,
    overrides: Sequence[tuple[str, str]] = (),
    token_embedding_type: str | None = None,
    output_tensor_type: str | None = None,
    imatrix: dict[str, np.ndarray] | None = None,
    name: str | None = None,
    progress: Callable[[Row], None] | None = None,
    replace: Mapping[str, Replacement] | None = None,
) -> list[Row]:
    """Writes a llama.cpp-ready GGUF of a Hugging Face checkpoint; returns one Row per tensor.

    Parameters
    ----------
    source : path
        The model folder (``config.json``, tokenizer files, ``model.safetensors``
        or a sharded index), or its ``.safetensors`` file (config next to it).
    output : path
        The ``.gguf`` to write (atomically).
    ftype : str
        llama.cpp file type: ``F32``, ``F16``, ``BF16``, ``Q8_0``, ``Q4_0``,
        ``Q4_1``, ``Q5_0``, ``Q5_1``, or a K mix (``Q4_K_M``, ``Q5_K_M``, ``Q4_K_S``,
        ``Q5_K_S``, ``Q6_K``, ``Q2_K``, ``Q3_K_S/M/L``) when the K kernels are built.
    overrides : sequence of (regex, type), optional
        Per-tensor types by GGUF name, as llama-quantize's ``--tensor-type``.
    token_embedding_type, output_tensor_type : str, optional
        As llama-quantize's options of the same names.
    imatrix : dict, optional
        GGUF tensor name -> importance per column (K types).
    name : str, optional
        ``general.name`` (default: the folder's name).
    progress : callable, optional
        Called with each input tensor's Row: first those not written, then each
        one as it is written (the CLI's progress bar).
    replace : mapping, optional
        Checkpoint tensor name (without a ``bert.`` prefix) -> what to write
        instead of the checkpoint's values: a float array of the same shape
        (written in float32), or ``(type, blocks)`` already in a GGUF block
        type (e.g. :func:`slimgrad.quant.gguf.from_quantized` of GPTQ codes),
        written as given. ``general.file_type`` then names the most common
        given block type.

    Raises
    ------
    FileNotFoundError
        Missing folder, config or weights (the message names the path).
    ValueError
        Unknown ``model_type`` / ``ftype``, a tensor llama.cpp has no name for,
        a NaN/inf in a tensor to quantize, or a type this build lacks. No file
        is written.
    """
    import gguf

    from .io import _atomic

    folder, files, _ = model_files(source)
    cfg = _config(folder)
    arch = cfg["model_type"]
    n_head = cfg.get("num_attention_heads", 1)
    n_gqa = max(1, n_head // (cfg.get("num_key_value_heads") or n_head))

    def choose(tensors: list) -> dict[str, gguf_mix.Choice]:
        return gguf_mix.choose_types(
            tensors,
            ftype,
            n_gqa=n_gqa,
            overrides=overrides,
            token_embedding_type=token_embedding_type,
            output_tensor_type=output_tensor_type,
            has_imatrix=imatrix is not None,
        )

    # checked here: inside the writer a missing file reads as "cannot write" the output
    vocab = (
        ("tokenizer.json", "vocab.txt") if arch == "bert" else ("tokenizer.json", "tokenizer.model")
    )
    if not any((folder / name).exists() for name in vocab):
        raise FileNotFoundError(
            f"{folder}: no {' or '.join(vocab)} (the GGUF holds the vocabulary)"
        )
    sources = [open_safetensors(f) for f in files]
    try:
        plans, skipped = _plan(arch, cfg, sources, ftype, choose, replace or {})
        missing = sorted({p.choice.type for p in plans} - set(gguf_mix.available()))
        if missing:
            raise ValueError(
                f"ftype {ftype}: needs GGUF type(s) {', '.join(missing)}, which "
                f"this build lacks (available: {', '.join(gguf_mix.available())})"
            )
        rows: list[Row] = list(skipped)
        for row in skipped if progress is not None else ():
            progress(row)
        done: list[Row] = []

        def write(tmp: str) -> None:
            wr = gguf.GGUFWriter(tmp, ARCHES[arch].lower())
            wr.add_name(name or folder.name)
            wr.add_file_type(gguf_mix.FILE_TYPES[_file_type(ftype, plans)][0])
            wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
            (_write_bert if arch == "bert" else _write_llama)(wr, cfg, folder)
            for p in plans:
                t = p.choice.type
                qt = gguf.GGMLQuantizationType[t]
                nbytes = _nbytes(p.shape, t)
                if t in ("F32", "F16"):
                    wr.add_tensor_info(p.name, p.shape, np.dtype(t.replace("F", "float")), nbytes)
                elif t == "BF16":
                    wr.add_tensor_info(p.name, p.shape, np.dtype(np.uint16), nbytes, qt)
                else:
                    byte_shape = (*p.shape[:-1], nbytes // max(1, int(np.prod(p.shape[:-1]))))
                    wr.add_tensor_info(p.name, byte_shape, np.dtype(np.uint8), nbytes, qt)
            wr.write_header_to_file()
            wr.write_kv_data_to_file()
            wr.write_ti_data_to_file()
            for p in plans:
                arr, note = _convert(p, cfg, imatrix)
                wr.write_tensor_data(arr)
                info = p.source.tensors[p.hf_name]
                reason = "; ".join(filter(None, [p.choice.reason, note]))
                done.append(
                    Row(
                        p.name,
                        p.shape,
                        info.dtype,
                        p.choice.type,
                        info.nbytes,
                        arr.nbytes,
                        reason or "-",
                    )
                )
                if progress is not None:
                    progress(done[-1])
            wr.close()

        _atomic(output, write)  # a failure leaves no file
        rows += done
    finally:
        for s in sources:
            s.close()
    return rows
