"""Evaluate grounded answers: retrieval recall, key facts in the answers, attribution support.

    python bench/eval_rag.py                    # report split, the default prompt format
    python bench/eval_rag.py --format all       # every format on the tune split: a table
    python bench/eval_rag.py --format reference-blocks --split report
    python bench/eval_rag.py --support          # "supported" on the labelled pairs, no LLM

The fictional corpus (tests/data/rag_corpus) is ingested once into a temp
Chroma store; each question of tests/data/rag_questions.json goes through
``ChatService.run`` as a ``/chat`` call with ``use_rag=True`` would (bundled
SmolLM2-135M, greedy, repetition penalty 1.1). Per format it reports:

- recall@k: the question's source document is among the k passages retrieved;
- key-fact rate: the answer states the item's ``key_fact`` (ignoring case,
  punctuation, thousands separators, numbers written as words or digits);
- supported rate: answers whose sentences are at least half attributed to a
  passage (retrieval/attribution.py), and the share of all sentences attributed;
- seconds per answer (retrieval, generation and attribution).

``--support`` scores the "supported" mark itself, without running the model:
tests/data/support_labels.jsonl holds sentence/evidence pairs from the app's
own answers to these questions, labelled by reading them, plus hard negatives
built from them (wrong number, entity, relation). It prints the precision and
recall of "supported" per split (tune: where the checks were tuned; report:
held out), how many of each kind of wrong pair were marked supported, and the
judge's time per pair (one embedding call for the split, then the checks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"


class CorpusDocuments:
    """The shared collection of a ``RetrievalService``, shaped like ``DocumentAccess``."""

    def __init__(self, service):
        self.service = service

    @property
    def embedder(self):
        return self.service.store.embedder

    def retrieve(self, caller, query, settings):
        from retrieval.service import SHARED

        return self.service.retrieve(query, [SHARED], settings)


def load_questions(split: str) -> list[dict]:
    """The evaluation items of one split ("tune", "report" or "all")."""
    items = json.loads((DATA / "rag_questions.json").read_text(encoding="utf-8"))
    return [q for q in items if split == "all" or q["split"] == split]


def evaluate(
    chat, retrieval, questions, fmt: str, k: int, max_new_tokens: int, penalty: float = 1.1
) -> dict:
    """Figures for one prompt format over ``questions``."""
    from retrieval.numerals import contains_fact
    from retrieval.service import SHARED
    from retrieval.settings import RetrievalSettings
    from studio.service import ChatTurn

    persona = chat.personas.get(None)
    settings = {"strategy": "greedy", "max_new_tokens": max_new_tokens}
    settings["repetition_penalty"] = penalty
    hits = facts = supported = sentences = attributed = 0
    seconds, attribution, rows = [], [], []
    for q in questions:
        found = retrieval.retrieve(q["question"], [SHARED], RetrievalSettings(top_k=k))
        hit = any(p.source == q["source"] for p in found)
        t0 = time.perf_counter()
        turn = ChatTurn(q["question"], [], persona, settings, True,
                        retrieval={"top_k": k, "prompt_format": fmt})  # fmt: skip
        *_, result = chat.run("eval", turn)
        seconds.append(time.perf_counter() - t0)
        attribution.append(result.stats.get("attribution_s", 0.0))
        used = result.stats.get("prompt_format", fmt)
        fact = contains_fact(result.reply, q["key_fact"])
        marks = [a["source"] is not None for a in result.attribution]
        hits, facts = hits + hit, facts + fact
        supported += bool(marks) and sum(marks) >= len(marks) / 2
        sentences, attributed = sentences + len(marks), attributed + sum(marks)
        rows.append({"question": q["question"], "key_fact": q["key_fact"], "fact": fact,
                     "reply": result.reply, "supported": marks})  # fmt: skip
    n = len(questions)
    return {
        "format": fmt if fmt != "auto" else f"auto ({used})",
        "n": n,
        "recall": hits / n,
        "key_fact": facts / n,
        "supported": supported / n,
        "sentences_supported": attributed / max(1, sentences),
        "s_per_answer": statistics.mean(seconds),
        "attribution_ms": 1000 * statistics.median(attribution or [0.0]),
        "rows": rows,
    }


def load_labels(split: str = "all") -> list[dict]:
    """The labelled sentence/evidence pairs of one split ("tune", "report" or "all")."""
    lines = (DATA / "support_labels.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if split == "all" or r["split"] == split]


def support_figures(embedder, rows: list[dict]) -> dict:
    """Precision and recall of "supported" over labelled ``rows``, and the misses by kind."""
    from retrieval.attribution import judge_pairs

    start = time.perf_counter()
    verdicts = judge_pairs(embedder, rows)
    seconds = time.perf_counter() - start
    said = [v["status"] == "supported" for v in verdicts]
    truth = [r["label"] == "supported" for r in rows]
    hits = sum(s and t for s, t in zip(said, truth, strict=True))
    wrong: dict[str, int] = {}
    for r, s, t in zip(rows, said, truth, strict=True):
        if s and not t:
            wrong[r["kind"]] = wrong.get(r["kind"], 0) + 1
    return {
        "pairs": len(rows),
        "positives": sum(truth),
        "precision": hits / max(1, sum(said)),
        "recall": hits / max(1, sum(truth)),
        "partly": sum(v["status"] == "partly" for v in verdicts),
        "false_supported": wrong,
        "ms_per_pair": 1000 * seconds / max(1, len(rows)),
        "verdicts": verdicts,
    }


def support_table(embedder) -> str:
    """A markdown table of "supported" precision and recall per split of the labels."""
    lines = [
        "| split | pairs | supported (label) | precision | recall | partly | wrongly supported "
        "| ms/pair |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("tune", "report", "all"):
        f = support_figures(embedder, load_labels(split))
        wrong = ", ".join(f"{k} {n}" for k, n in sorted(f["false_supported"].items())) or "none"
        lines.append(
            f"| {split} | {f['pairs']} | {f['positives']} | {f['precision']:.2f} "
            f"| {f['recall']:.2f} | {f['partly']} | {wrong} | {f['ms_per_pair']:.1f} |"
        )
    return "\n".join(lines)


def table(results: list[dict], k: int) -> str:
    """A markdown table of the figures, one row per format."""
    lines = [
        f"| prompt format | questions | recall@{k} | key-fact rate | supported answers "
        "| supported sentences | s/answer | attribution ms (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['format']} | {r['n']} | {r['recall']:.0%} | {r['key_fact']:.0%} "
            f"| {r['supported']:.0%} | {r['sentences_supported']:.0%} | {r['s_per_answer']:.2f} "
            f"| {r['attribution_ms']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Ingest the corpus, run the questions, print a table."""
    from chat.rag_formats import FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(FORMATS)
    parser.add_argument("--format", default="auto", help=f"auto, all, or one of: {names}")
    parser.add_argument("--split", choices=["tune", "report", "all"], default=None,
                        help="default: tune with --format all, else report")  # fmt: skip
    parser.add_argument("--k", type=int, default=4, help="passages retrieved (top_k)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repetition-penalty", type=float, default=1.1)
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--support", action="store_true",
                        help="only score 'supported' on the labelled pairs")  # fmt: skip
    args = parser.parse_args()
    if args.support:
        from retrieval.embedder import Embedder

        print(support_table(Embedder()))
        return
    split = args.split or ("tune" if args.format == "all" else "report")
    formats = list(FORMATS) if args.format == "all" else [args.format]

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.engine import ChatEngine
    from chat.models import default_model_path
    from retrieval.service import RetrievalService
    from studio.service import ChatService

    questions = load_questions(split)
    with tempfile.TemporaryDirectory() as tmp:
        retrieval = RetrievalService(tmp)
        corpus = sorted((DATA / "rag_corpus").iterdir())
        retrieval.ingest_folder(DATA / "rag_corpus")
        backend = LlamaCppBackend(default_model_path(), n_ctx=2048)
        chat = ChatService(ChatEngine(backend), documents=CorpusDocuments(retrieval))
        print(f"{len(questions)} questions ({split} split), {len(corpus)} documents, "
              f"{backend.info.model}, chat template: {backend.info.chat_template}")  # fmt: skip
        results = []
        for fmt in formats:
            result = evaluate(
                chat, retrieval, questions, fmt, args.k, args.max_new_tokens,
                args.repetition_penalty,
            )  # fmt: skip
            results.append(result)
            if args.show:
                for row in result["rows"]:
                    mark = "OK " if row["fact"] else "-- "
                    print(f"{mark}{row['question']} [{row['key_fact']}] -> {row['reply']!r}")
        print(table(results, args.k))


if __name__ == "__main__":
    main()
