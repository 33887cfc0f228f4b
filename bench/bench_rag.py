"""Benchmark retrieval: ingest throughput, retrieval latency at scale, and TTFT added by RAG.

Prints figures; asserts nothing.

    python bench/bench_rag.py [--docs 60] [--sizes 10000 100000] [--queries 200]

1. Ingest: the app's ingest (load, chunk, embed, write to Chroma) in chunks/s,
   against raw sentence-transformers encoding of the very same chunk texts.
2. Retrieval latency p50/p95, query embedding included, in collections of
   10k and 100k chunks. Their vectors are random unit vectors (embedding
   100k real chunks would take most of an hour on 2 cores); index size is
   what drives search time, and the query is embedded for real.
3. Time to first token of a chat turn with and without retrieval (bundled model).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "marsh heron ferry lantern boardwalk reed island orchard cider festival harbour "
    "lighthouse glacier valley comet archive museum bridge tunnel railway meadow "
    "copper silver granite quartz willow maple cedar falcon otter badger"
).split()


def fake_document(rng: random.Random, paragraphs: int = 12) -> str:
    """A few pages of varied prose-like text."""
    out = []
    for p in range(paragraphs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
            for _ in range(rng.randint(4, 8))
        ]
        out.append(f"## Part {p}\n\n" + " ".join(sentences))
    return "\n\n".join(out)


def bench_ingest(store, n_docs: int, folder: Path, runs: int = 3) -> dict:
    """App ingest vs raw encode of the same chunks; medians of ``runs`` rounds each."""
    from sentence_transformers import SentenceTransformer

    from retrieval.chunking import ChunkSettings

    rng = random.Random(0)
    files = []
    for i in range(n_docs):
        path = folder / f"doc{i:03d}.md"
        path.write_text(fake_document(rng), encoding="utf-8")
        files.append((str(path), path.name))
    # Both sides start warm: the raw model has encoded once, and so has the app, whose
    # store has also written once (Chroma's first write in a process sets itself up).
    warm = folder / "warm-up.txt"
    warm.write_text("A short text to warm up the embedder and the store.", encoding="utf-8")
    store.ingest([(str(warm), warm.name)], "bench-warm-up", ChunkSettings(), 2**20)
    raw_model = SentenceTransformer(store.embedder.path, device="cpu", local_files_only=True)
    raw_model.encode(["warm-up"] * 64)
    app_cps, raw_cps = [], []
    for run in range(runs):
        name = "bench-ingest" if run == 0 else f"bench-ingest-{run}"
        t0 = time.perf_counter()
        summaries = store.ingest(files, name, ChunkSettings(), 10 * 2**20)
        chunks = sum(s.chunks_added for s in summaries)
        app_cps.append(chunks / (time.perf_counter() - t0))
        col = store._collection(name)  # our own store: read back the exact chunk texts
        texts = [m["text"] for m in col.get(include=["metadatas"])["metadatas"]]
        t0 = time.perf_counter()
        raw_model.encode(texts, normalize_embeddings=True)  # the library's defaults
        raw_cps.append(len(texts) / (time.perf_counter() - t0))
    return {
        "chunks": chunks,
        "app_cps": statistics.median(app_cps),
        "raw_cps": statistics.median(raw_cps),
    }


def bench_latency(store, size: int, queries: int) -> dict:
    """p50/p95 of store.retrieve (query embedding included) over ``size`` chunks."""
    import numpy as np

    name = f"bench-{size}"
    store.drop(name)
    col = store._collection(name, create=True)
    rng = np.random.default_rng(size)
    batch = min(5000, store._max_batch)
    t0 = time.perf_counter()
    for start in range(0, size, batch):
        n = min(batch, size - start)
        vecs = rng.standard_normal((n, store.embedder.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        col.add(
            ids=[f"c{start + i}" for i in range(n)],
            embeddings=vecs,
            metadatas=[
                {
                    "text": f"chunk {start + i}",
                    "source": f"doc{(start + i) // 50}.txt",
                    "chunk_index": i,
                    "doc_hash": f"h{(start + i) // 50}",
                    "n_chunks": 1,
                }
                for i in range(n)
            ],
        )
    build_s = time.perf_counter() - t0
    words = WORDS
    times = []
    pyrng = random.Random(size)
    for _ in range(queries):
        query = " ".join(pyrng.choice(words) for _ in range(8)) + "?"
        t = time.perf_counter()
        store.retrieve(query, [name], k=4)
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "size": size,
        "build_s": build_s,
        "p50_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(0.95 * (len(times) - 1))] * 1000,
    }


def bench_ttft(documents_service, runs: int = 5) -> dict:
    """Time to first token with and without retrieval, bundled model, same question."""
    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.engine import ChatEngine
    from chat.models import default_model_path
    from studio.service import ChatService, ChatTurn

    service = ChatService(
        ChatEngine(LlamaCppBackend(default_model_path())), None, documents_service
    )
    settings = {"strategy": "greedy", "max_new_tokens": 8}
    out = {}
    for use_rag in (False, True):
        ttfts, retrieval = [], []
        for _ in range(runs):
            turn = ChatTurn(
                "Where do the herons nest in the marsh?",
                [],
                service.personas.get("assistant"),
                settings,
                use_rag,
                {"top_k": 4, "min_score": 0.0},
            )
            *_, result = service.run("bench", turn)
            ttfts.append(result.stats["ttft_s"])
            retrieval.append(result.stats.get("retrieval_s", 0.0))
        out[use_rag] = (statistics.median(ttfts) * 1000, statistics.median(retrieval) * 1000)
    return out


def main() -> None:
    """Run all three and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from retrieval.embedder import Embedder
    from retrieval.service import RetrievalService
    from retrieval.store import DocumentStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "docs").mkdir()
        service = RetrievalService(tmp)
        store = service.store
        assert isinstance(store, DocumentStore) and isinstance(store.embedder, Embedder)
        ing = bench_ingest(store, args.docs, tmp / "docs")
        print(
            f"ingest: {ing['chunks']} chunks; app {ing['app_cps']:.1f} chunks/s, raw "
            f"sentence-transformers encode {ing['raw_cps']:.1f} chunks/s, ratio "
            f"{ing['app_cps'] / ing['raw_cps']:.2f} (target >= 0.90)"
        )
        for size in args.sizes:
            lat = bench_latency(store, size, args.queries)
            print(
                f"retrieve at {lat['size']:>7,} chunks: p50 {lat['p50_ms']:.1f} ms, p95 "
                f"{lat['p95_ms']:.1f} ms incl. query embedding (target p95 < 50 ms at 100k; "
                f"index built in {lat['build_s']:.0f} s)"
            )
        ttft = bench_ttft(service)
        print(
            f"time to first token: {ttft[False][0]:.1f} ms without retrieval, "
            f"{ttft[True][0]:.1f} ms with it (retrieval itself {ttft[True][1]:.1f} ms; "
            f"the rest is the longer prompt)"
        )


if __name__ == "__main__":
    main()
