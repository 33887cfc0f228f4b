"""Collect sentence/evidence pairs from the app's own answers, to label by hand.

    python bench/support_pairs.py --out /tmp/pairs.jsonl [--formats focused,question-last]
                                  [--skip N]  # resume after N questions

Each question of tests/data/rag_questions.json goes through ``ChatService.run``
as ``bench/eval_rag.py`` runs it (bundled SmolLM2-135M, greedy); for every
sentence of every reply, the passage sentences closest to it (MiniLM cosine,
``--top`` of them) are written as rows ``{question, split, format, sentence,
evidence, passage, where, cosine}`` (``where``: the passage's file and
section, as the prompt labels it). tests/data/support_labels.jsonl holds these
rows once read and labelled (``label``, ``kind``), with the hard negatives
built from them (``origin: constructed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def pairs_for(embedder, question: str, reply: str, passages: list[str], top: int) -> list[dict]:
    """The ``top`` closest passage sentences of each reply sentence, as rows."""
    from retrieval.attribution import sentence_spans, split_sentences, strip_citations

    evidence = [(p, p[a:b]) for p in passages for a, b in sentence_spans(p)]
    sentences = [strip_citations(s)[0] for s in split_sentences(reply)]
    sentences = [s for s in sentences if s]
    if not sentences or not evidence:
        return []
    vectors = embedder.encode(sentences + [e for _, e in evidence])
    sims = vectors[: len(sentences)] @ vectors[len(sentences) :].T
    rows = []
    for i, sentence in enumerate(sentences):
        for j in sims[i].argsort()[::-1][:top]:
            passage, text = evidence[j]
            rows.append({"question": question, "sentence": sentence, "evidence": text,
                         "passage": passage, "cosine": round(float(sims[i, j]), 4)})  # fmt: skip
    return rows


def main() -> None:
    """Ingest the corpus, answer every question in each format, write the pairs."""
    from eval_rag import DATA, CorpusDocuments, load_questions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--formats", default="focused,question-last")
    parser.add_argument("--top", type=int, default=1, help="evidence sentences per sentence")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip", type=int, default=0, help="start after this many questions")
    args = parser.parse_args()

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.engine import ChatEngine
    from chat.models import default_model_path
    from retrieval.service import RetrievalService
    from studio.service import ChatService, ChatTurn

    questions = load_questions("all")[args.skip :]
    settings = {"strategy": "greedy", "max_new_tokens": args.max_new_tokens,
                "repetition_penalty": 1.1}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, open(args.out, "w", encoding="utf-8") as out:
        retrieval = RetrievalService(tmp)
        retrieval.ingest_folder(DATA / "rag_corpus")
        backend = LlamaCppBackend(default_model_path(), n_ctx=2048)
        chat = ChatService(ChatEngine(backend), documents=CorpusDocuments(retrieval))
        persona = chat.personas.get(None)
        embedder = retrieval.store.embedder
        for fmt in args.formats.split(","):
            for q in questions:
                turn = ChatTurn(q["question"], [], persona, settings, True,
                                retrieval={"top_k": 4, "prompt_format": fmt})  # fmt: skip
                *_, result = chat.run("eval", turn)
                passages = [s["text"] for s in result.sources]
                where = {
                    s["text"]: f"{s['source']}, {s.get('section') or ''}" for s in result.sources
                }
                for row in pairs_for(embedder, q["question"], result.reply, passages, args.top):
                    row.update(where=where[row["passage"]], split=q["split"], format=fmt,
                               reply=result.reply)  # fmt: skip
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                print(fmt, q["question"], "->", repr(result.reply), flush=True)


if __name__ == "__main__":
    main()
