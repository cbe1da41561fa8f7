"""Pretrained models in slimgrad's NumPy modules, and calibration over them.

- :mod:`slimgrad.models.bert`: ``load(path)`` reads a Hugging Face BERT
  directory (config.json, model.safetensors, tokenizer) into a
  :class:`~slimgrad.models.bert.SentenceBert` whose ``encode(sentences)``
  returns sentence-transformers' embeddings.
- :mod:`slimgrad.models.llama`: the llama-family decoder (llama, mistral,
  qwen2) in NumPy, one layer at a time from a checkpoint's memory map
  (``slimgrad compress`` quantizes it layer by layer with GPTQ).
- :mod:`slimgrad.models.calibration`: per Linear layer input Hessians
  ``X^T X`` and activation statistics over calibration text (GPTQ, AWQ,
  Wanda and SparseGPT need them).
"""

from __future__ import annotations

from . import bert, calibration, llama
from .calibration import Calibration, calibrate, hessian_accumulate

__all__ = ["Calibration", "bert", "calibrate", "calibration", "hessian_accumulate", "llama"]
