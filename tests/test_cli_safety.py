"""`slimgrad quantize` / `slimgrad prune` refusals: each one names the problem, exits 2,
and leaves every file as it was (no output, no temporary file, input unchanged)."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import pytest
from slimgrad import cli, quant

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def snapshot(folder):
    """path -> (bytes, mode, mtime_ns) of everything under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = (fh.read(), st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def model(tmp_path, rng):
    """A tiny BERT-like checkpoint folder: config.json and model.safetensors."""
    folder = tmp_path / "model"
    folder.mkdir()
    tensors = {
        "embeddings.word_embeddings.weight": rng.standard_normal((16, 64)).astype(np.float32),
        "encoder.layer.0.attention.self.query.weight": rng.standard_normal((64, 64)).astype(
            np.float32
        ),
        "encoder.layer.0.attention.self.query.bias": rng.standard_normal(64).astype(np.float32),
        "encoder.layer.0.output.LayerNorm.weight": np.ones(64, np.float32),
        "pooler.dense.weight": rng.standard_normal((64, 64)).astype(np.float32),
    }
    safetensors_numpy.save_file(
        tensors, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder, tensors


def refused(argv, capsys, root, message):
    before = snapshot(root)
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert err.startswith(f"slimgrad {argv[0]}: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(root) == before  # nothing written, nothing changed


@pytest.mark.parametrize("command", ["quantize", "prune"])
def test_output_equal_to_the_input_is_refused_also_through_links(model, tmp_path, capsys, command):
    folder, _ = model
    src = folder / "model.safetensors"
    os.link(src, tmp_path / "hard.safetensors")
    os.symlink(src, tmp_path / "soft.safetensors")
    extra = ["--sparsity", "0.5"] if command == "prune" else []
    for out in (src, tmp_path / "hard.safetensors", tmp_path / "soft.safetensors"):
        refused([command, src, "-o", out, *extra], capsys, tmp_path, "is the input file")
    if command == "quantize":
        refused(
            [command, src, "-o", tmp_path / "hard.safetensors", "--format", "gguf"],
            capsys,
            tmp_path,
            "is the input file",
        )


@pytest.mark.parametrize("command", ["quantize", "prune"])
def test_quantized_input_is_refused_naming_its_reader(model, tmp_path, capsys, command):
    folder, tensors = model
    extra = ["--sparsity", "0.5"] if command == "prune" else []
    q = tmp_path / "q.safetensors"
    quant.save(q, {"w": quant.quantize(tensors["pooler.dense.weight"])})
    refused(
        [command, q, "-o", tmp_path / "o.safetensors", *extra],
        capsys,
        tmp_path,
        "already quantized by slimgrad (slimgrad.quant metadata); it is read by "
        f"slimgrad.quant.load(); `slimgrad {command}` takes the float checkpoint",
    )
    g = tmp_path / "m.gguf"
    quant.save_gguf(g, {"w": tensors["pooler.dense.weight"]})
    refused(
        [command, g, "-o", tmp_path / "o.safetensors", *extra],
        capsys,
        tmp_path,
        f"is a GGUF file; `slimgrad {command}` reads float safetensors checkpoints",
    )
    ct = tmp_path / "ct.safetensors"
    safetensors_numpy.save_file(
        {
            "fc.weight_packed": np.zeros((2, 1), np.int32),
            "fc.weight_scale": np.ones((2, 1), np.float32),
        },
        str(ct),
    )
    refused(
        [command, ct, "-o", tmp_path / "o.safetensors", *extra],
        capsys,
        tmp_path,
        "holds compressed-tensors quantized weights (fc.weight_",
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--format", "gguf", "--rounding", "stochastic", "--clip", "mse"],
            "--rounding, --clip: not used by --format gguf",
        ),
        (["-o.gguf", "--group-size", "32"], "--group-size: not used by --format gguf"),
        (["-o.gguf", "--asymmetric"], "--asymmetric: not used by --format gguf"),
        (["-o.gguf", "--nonfinite", "propagate"], "--nonfinite: not used by --format gguf"),
        (["-o.gguf", "--bits", "4"], "--bits: not used by --format gguf; choose --type"),
        (["-o.gguf", "--include", "pooler"], "--include: not used by --format gguf"),
        (["--type", "Q4_0"], "--type: only for --format gguf"),
        (
            ["--imatrix", "x.gguf", "--tensor-type", "a=Q8_0"],
            "--imatrix, --tensor-type: only for --format gguf",
        ),
        (
            ["--format", "compressed-tensors", "--output-tensor-type", "Q8_0"],
            "--output-tensor-type: only for --format gguf",
        ),
        (["-o.gguf", "--type", "Q9_9"], "--type: expected one of F32, F16"),
        (["-o.gguf", "--tensor-type", "attn_v"], "--tensor-type 'attn_v': expected REGEX=TYPE"),
        (["-o.gguf", "--tensor-type", "(=Q8_0"], "--tensor-type '(': not a regular expression"),
        (["--exclude", "("], "--exclude '(': not a regular expression"),
        (
            ["-o.gguf", "--imatrix", "/nonexistent/i.gguf"],
            "--imatrix /nonexistent/i.gguf: no such file",
        ),
        (["--bits", "9"], "--bits: expected 2..8, got 9"),
        (["--group-size", "0"], "--group-size: expected a positive integer, got 0"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_quantize_options_that_do_not_apply_are_refused(model, capsys, options, message):
    folder, _ = model
    out = folder.parent / ("out.gguf" if "-o.gguf" in options else "out")
    options = [o for o in options if o != "-o.gguf"]
    refused(["quantize", folder, "-o", out, *options], capsys, folder.parent, message)


def test_gguf_needs_the_hyperparameters(model, capsys):
    folder, _ = model  # its config.json has model_type only
    refused(
        ["quantize", folder, "-o", folder.parent / "m.gguf", "--type", "Q8_0"],
        capsys,
        folder.parent,
        "needs the integer(s) max_position_embeddings, hidden_size",
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt9"}))
    refused(
        ["quantize", folder, "-o", folder.parent / "m.gguf"],
        capsys,
        folder.parent,
        "model_type: expected one of bert, llama, mistral, got 'gpt9'",
    )


def test_compressed_tensors_output_folder_must_be_new_or_empty(model, capsys):
    folder, _ = model
    busy = folder.parent / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused(
        ["quantize", folder, "-o", busy, "--format", "compressed-tensors"],
        capsys,
        folder.parent,
        "folder is not empty",
    )
    lone = folder.parent / "lone.safetensors"
    os.link(folder / "model.safetensors", lone)
    os.rename(folder / "config.json", folder.parent / "cfg.json")
    refused(
        [
            "quantize",
            folder / "model.safetensors",
            "-o",
            folder.parent / "ct",
            "--format",
            "compressed-tensors",
        ],
        capsys,
        folder.parent,
        "needs the model's config.json",
    )


@pytest.mark.parametrize("nm", ["0:4", "4:4", "5:4", "2:0", "x"])
def test_prune_nm_must_keep_some_and_drop_some(model, capsys, nm):
    folder, _ = model
    message = "expected N:M such as 2:4" if nm == "x" else "--nm: expected 0 < N < M"
    refused(
        ["prune", folder / "model.safetensors", "-o", folder.parent / "o.safetensors", "--nm", nm],
        capsys,
        folder.parent,
        message,
    )


def succeeds(capsys, *argv):
    """Runs the CLI, expects exit status 0, returns what it printed."""
    assert cli.main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_prune_and_quantize_defaults_leave_embeddings_norms_biases_and_pooler(model, capsys):
    folder, tensors = model
    src, out = folder / "model.safetensors", folder.parent / "p.safetensors"
    table = succeeds(capsys, "prune", src, "-o", out, "--sparsity", "0.5", "--global")
    got = safetensors_numpy.load_file(str(out))
    pruned = "encoder.layer.0.attention.self.query.weight"
    assert np.count_nonzero(got[pruned] == 0) == tensors[pruned].size // 2
    for name in (
        "embeddings.word_embeddings.weight",
        "pooler.dense.weight",
        "encoder.layer.0.output.LayerNorm.weight",
    ):
        np.testing.assert_array_equal(got[name], tensors[name])
        line = next(ln for ln in table.splitlines() if ln.startswith(name))
        assert line.endswith("--include to change)" if tensors[name].ndim == 2 else "(< 2-D)")
    succeeds(
        capsys,
        "prune",
        src,
        "-o",
        out,
        "--sparsity",
        "0.5",
        "--include",
        "pooler",
        "--exclude",
        "query",
    )
    got = safetensors_numpy.load_file(str(out))
    assert np.count_nonzero(got["pooler.dense.weight"] == 0) == 64 * 64 // 2
    np.testing.assert_array_equal(got[pruned], tensors[pruned])

    q = folder.parent / "q.safetensors"
    succeeds(capsys, "quantize", src, "-o", q)
    back = quant.load(q)
    assert isinstance(back[pruned], quant.QuantizedTensor)
    assert not isinstance(back["pooler.dense.weight"], quant.QuantizedTensor)
    assert not isinstance(back["embeddings.word_embeddings.weight"], quant.QuantizedTensor)


def test_outputs_have_the_umask_mode(model, capsys):
    folder, _ = model
    src = folder / "model.safetensors"
    outs = [folder.parent / "p.safetensors", folder.parent / "q.safetensors"]
    old = os.umask(0o027)
    try:
        succeeds(capsys, "prune", src, "-o", outs[0], "--sparsity", "0.5")
        succeeds(capsys, "quantize", src, "-o", outs[1])
    finally:
        os.umask(old)
    for p in outs:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


@pytest.mark.parametrize("command", ["quantize", "prune"])
def test_help_has_a_description_and_examples(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"slimgrad {command} " in text.split("examples:")[1]
    assert "--include" in text and "--exclude" in text
    assert len(text.split("options:")[0].splitlines()) > 5  # a description, not just usage


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("command", ["quantize", "prune", "gguf"])
def test_a_progress_bar_runs_over_the_tensors_on_a_terminal(model, monkeypatch, command):
    folder, tensors = model
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "max_position_embeddings": 8,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "vocab_size": 16,
            }
        )
    )
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(11)])
    )
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    src = folder / "model.safetensors"
    argv = {
        "quantize": ["quantize", src, "-o", folder.parent / "q.safetensors"],
        "prune": ["prune", src, "-o", folder.parent / "p.safetensors", "--sparsity", "0.5"],
        "gguf": [
            "quantize",
            folder,
            "-o",
            folder.parent / "m.gguf",
            "--type",
            "Q8_0",
            "--exclude",
            "pooler",
        ],
    }[command]
    if command == "gguf":  # the tiny model's tensors llama.cpp names; the pooler is skipped
        pytest.importorskip("gguf")
    assert cli.main([str(a) for a in argv]) == 0
    frames = [f for f in err.getvalue().split("\r") if f.strip()]
    n = len(tensors)
    assert frames and all(f"/{n} [" in f for f in frames), frames  # one step per tensor
    assert err.getvalue().endswith("\r")  # and the bar is cleared at the end (leave=False)
