"""Near-duplicate detection of the dataset export: the old all-pairs difflib check vs the index.

    python bench/bench_dedup.py [--sizes 200 400 800 2000] [--old-up-to 800]

Two sets, built from the RAG test corpus (tests/data) with a fixed seed:
- **chats**: conversations of 1 to 6 turns (questions from the corpus's question
  list, replies made of its sentences), with the near duplicates real chats
  have: retried replies with a few words changed, the same chat exported twice
  with small edits, case and punctuation changes, repeated questions;
- **one long chat**: one conversation of N short messages (the shape of the
  report: 1,000 messages, 38 KB), where every reply's row repeats the whole chat.
For each size it prints the seconds of the old and the new check, the rows each
keeps and how many of the old ones' kept rows the new one keeps too (agreement).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio import datasets  # noqa: E402

DATA = ROOT / "tests" / "data"


def _sentences() -> list[str]:
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted((DATA / "rag_corpus").iterdir()))
    text = re.sub(r"[#*`>|-]+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s.strip()) < 300]


def _questions() -> list[str]:
    return [q["question"] for q in json.loads((DATA / "rag_questions.json").read_text())]


def _edit(text: str, rng: random.Random, words: int) -> str:
    """Change, drop or add a few words (a retried reply, an edited copy)."""
    parts = text.split()
    for _ in range(words):
        i = rng.randrange(len(parts))
        how = rng.random()
        if how < 0.4:
            parts[i] = rng.choice(["really", "also", "quite", "the", "very", "just"])
        elif how < 0.7 and len(parts) > 3:
            del parts[i]
        else:
            parts.insert(i, rng.choice(["indeed", "often", "still", "then"]))
    return " ".join(parts)


def chats(n_messages: int, seed: int = 0) -> list[list[dict]]:
    """About ``n_messages`` messages of realistic chats, with their usual near duplicates."""
    rng = random.Random(seed)
    sentences, questions = _sentences(), _questions()
    out, count = [], 0
    while count < n_messages:
        roll = rng.random()
        if out and roll < 0.15:  # the same chat again, lightly edited (exported twice)
            chat = [dict(m) for m in rng.choice(out)]
            m = rng.choice([m for m in chat if m["role"] == "assistant"])
            m["content"] = _edit(m["content"], rng, 1)
        elif out and roll < 0.22:  # the same chat again, only case and punctuation changed
            again = rng.choice(out)
            chat = [dict(m, content=m["content"].lower().rstrip(".") + "!") for m in again]
        else:
            chat = []
            for _ in range(rng.randint(1, 6)):
                chat.append({"role": "user", "content": rng.choice(questions)})
                reply = " ".join(rng.sample(sentences, rng.randint(1, 4)))
                message = {"role": "assistant", "content": reply}
                if rng.random() < 0.25:  # retried: an earlier, slightly different version
                    other = _edit(reply, rng, rng.randint(1, 3))
                    message["versions"] = [{"content": other}, {"content": reply}]
                    message["current"] = 1
                    message["feedback"] = rng.choice([None, "like"])
                chat.append(message)
        out.append(chat)
        count += len(chat)
    return out


def long_chat(n_messages: int) -> list[list[dict]]:
    """One conversation of ``n_messages`` short messages."""
    roles = ("user", "assistant")
    return [[{"role": roles[i % 2], "content": f"message {i}"} for i in range(n_messages)]]


# -- the old check, as it was: every new row against every kept row of its shape --


def _old_near(a: str, b: str) -> bool:
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return m.real_quick_ratio() >= 0.9 and m.quick_ratio() >= 0.9 and m.ratio() >= 0.9


def old_dedupe(rows: list[dict]) -> list[dict]:
    seen, kept, out = set(), [], []
    for row in rows:
        shape = ",".join(sorted(row))
        text = datasets._normal(datasets._text(row))
        digest = hashlib.sha256(f"{shape}\x00{text}".encode()).hexdigest()
        if digest in seen or any(s == shape and _old_near(text, t) for t, s in kept):
            continue
        seen.add(digest)
        kept.append((text, shape))
        out.append(row)
    return out


def raw_rows(kind: str, conversations) -> list[dict]:
    """The rows before deduplication (the module's own builders, dedup switched off)."""
    original = datasets._dedupe
    datasets._dedupe = lambda data, *a, **k: data
    try:
        return datasets.export(kind, conversations).rows
    finally:
        datasets._dedupe = original


def measure(name: str, conversations, run_old: bool) -> None:
    for kind in ("sft", "preference"):
        rows = raw_rows(kind, conversations)
        t0 = time.perf_counter()
        new = datasets.export(kind, conversations).rows
        new_s = time.perf_counter() - t0
        line = f"{name:>22} {kind:>10} rows {len(rows):5d}  new {new_s:7.2f} s keeps {len(new):5d}"
        if run_old:
            t0 = time.perf_counter()
            old = old_dedupe(rows)
            old_s = time.perf_counter() - t0
            key = [json.dumps(r, sort_keys=True) for r in old]
            same = len(set(key) & {json.dumps(r, sort_keys=True) for r in new})
            agree = "identical" if key == [json.dumps(r, sort_keys=True) for r in new] else "differ"
            line += f" | old {old_s:7.2f} s keeps {len(old):5d} | both keep {same} ({agree})"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 400, 800, 2000])
    parser.add_argument("--old-up-to", type=int, default=800, help="skip the old check above")
    args = parser.parse_args()
    for n in args.sizes:
        measure(f"chats, {n} messages", chats(n), n <= args.old_up_to)
    for n in args.sizes:
        measure(f"one chat, {n} messages", long_chat(n), n <= args.old_up_to)


if __name__ == "__main__":
    main()
