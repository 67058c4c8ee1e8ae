"""The semantic cache's embedder: the ONNX Runtime graph computes what the numpy reference computes."""

from __future__ import annotations

import numpy as np
import pytest

from llmfleet.cache.embedding import HashEmbedder, MiniLMEmbedder, load_embedder

TEXTS = [
    "How do I reset my password?",
    "what's the way to change the password of my account",
    "Explain the difference between a process and a thread in three sentences, with an example of each.",
    "x",
]


@pytest.fixture(scope="module")
def onnx_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(backend="onnx")


def test_onnx_graph_matches_numpy_reference(onnx_embedder: MiniLMEmbedder) -> None:
    ref = MiniLMEmbedder(backend="numpy")
    a, b = onnx_embedder.embed(TEXTS), ref.embed(TEXTS)  # one padded batch: the mask must hide the padding
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert np.allclose(a, b, atol=2e-5)
    one = np.concatenate([onnx_embedder.embed([t]) for t in TEXTS])
    assert np.allclose(one, a, atol=2e-5)  # batched or alone: same vector


def test_embeddings_are_unit_length_and_paraphrases_are_closer(onnx_embedder: MiniLMEmbedder) -> None:
    v = onnx_embedder.embed(TEXTS)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_unknown_backend_and_model_are_named() -> None:
    with pytest.raises(ValueError, match="backend 'torch'"):
        MiniLMEmbedder(backend="torch")
    with pytest.raises(ValueError, match="unknown embedding model 'bge'"):
        load_embedder("bge")
    assert isinstance(load_embedder("hash"), HashEmbedder)


def test_max_tokens_reads_what_the_tokenizers_own_truncation_reads(onnx_embedder: MiniLMEmbedder) -> None:
    """The model router embeds the start of a query (max_tokens=64): the same vectors as an encoder whose
    tokenizer truncates at 64, alone or in a batch of mixed lengths."""
    long = " ".join(["the integral of a convergent series"] * 40)
    texts = [long, TEXTS[0], long + " and more"]
    short = MiniLMEmbedder(backend="onnx", max_length=64)
    assert np.allclose(onnx_embedder.embed(texts, max_tokens=64), short.embed(texts), atol=2e-5)
    assert not np.allclose(onnx_embedder.embed([long], max_tokens=64), onnx_embedder.embed([long]), atol=1e-3)
    assert np.allclose(
        onnx_embedder.embed([TEXTS[0]], max_tokens=64), onnx_embedder.embed([TEXTS[0]]), atol=2e-5
    )
