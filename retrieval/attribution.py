"""Which retrieved passage supports each sentence of a reply, and the best quote for a question.

Every sentence of the reply is compared (cosine of all-MiniLM-L6-v2
embeddings) with every sentence of the passages that were in the prompt. A
close paraphrase is not enough: the closest evidence sentences are checked in
turn (retrieval/support.py) for the sentence's numbers, with what they are
attached to, its names, colours and the like, negation and content words. A
sentence is "supported" by (attributed to the passage of) the first close
evidence (cosine at least ``SUPPORTED``) that passes the checks; "partly"
supported when close evidence fails one, with the reason ("the passage gives
1873 for “the festival began in 1873”"); else "not found". One batched
embedding call covers the question, the reply and the passages; nothing is
cached between calls.

Everything returned is plain data: lists and dicts of strings and numbers.
"""

from __future__ import annotations

import re

from retrieval.support import Check, check, context_of, topic_words

# Cosine at or above this (and the lexical checks) attributes a sentence. On MiniLM, a
# sentence copied or lightly reworded from a passage scores 0.8-1.0, a loose paraphrase
# 0.6-0.8 and an unrelated sentence on the same topic 0.2-0.5 (tests/test_attribution.py).
SUPPORTED = 0.55
# The cosine that is enough when every content word of the sentence is in the evidence (or
# the question it restates): tuned on the tune split of tests/data/support_labels.jsonl;
# a short sentence ("Its battery lasts 95 minutes.") embeds far from a long one that states it.
CLOSE_ENOUGH = 0.3
# How many of the closest evidence sentences are checked for each reply sentence.
CANDIDATES = 5
# "partly": close evidence holding at least this share of the sentence's content words.
MIN_PARTLY_COVERAGE = 0.3
# The support shown for close evidence that fails a check (a wrong number gives 0).
PARTLY_FACTOR = 0.5
# Extractive answers come from sentences of at least this many words (not headings).
MIN_QUOTE_WORDS = 4

_CITE = r"\[\d+(?:\s*,\s*\d+)*\]"
_CITE_RE = re.compile(rf"\s*{_CITE}")
# The end of a sentence: terminal punctuation, closing quotes or brackets, and any
# citation markers the model put after the full stop, followed by a space or the end.
_END_RE = re.compile(rf"[.!?]+[\"'”’)\]]*(?:\s*{_CITE})*(?=\s|$)")
_LINE_RE = re.compile(r"[^\n]+")
_BULLET_RE = re.compile(r"^\s*(?:[-*•>]+|\d+[.)]|#+)\s+")
ABBREVIATIONS = {
    "e.g", "i.e", "mr", "mrs", "ms", "dr", "st", "mt", "vs", "etc", "no", "fig", "approx",
    "ca", "cf", "jr", "sr", "prof",
}  # fmt: skip


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the sentences of ``text``.

    Lines are split first (list items and headings are sentences of their own,
    their bullet or ``#`` left out), then at ``.``, ``!`` or ``?`` followed by a
    space, unless the word before is an abbreviation or an initial, or the next
    word starts in lower case. Citation markers after the full stop stay with
    their sentence.
    """
    spans = []
    for line in _LINE_RE.finditer(text):
        bullet = _BULLET_RE.match(line.group(0))
        start = line.start() + (len(bullet.group(0)) if bullet else 0)
        end_of_line = line.end()
        for m in _END_RE.finditer(text, start, end_of_line):
            word = re.search(r"([\w.]+)$", text[start : m.start()])
            word = word.group(1).lower() if word else ""
            rest = text[m.end() : end_of_line].lstrip()
            if word in ABBREVIATIONS or re.fullmatch(r"[a-z]", word):
                continue
            if rest and rest[0].islower():
                continue
            _add(spans, text, start, m.end())
            start = m.end()
        _add(spans, text, start, end_of_line)
    return spans


def _add(spans: list, text: str, start: int, end: int) -> None:
    """Append ``(start, end)`` trimmed of white space, if anything is left."""
    piece = text[start:end]
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    if end > start:
        spans.append((start, end))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see ``sentence_spans``)."""
    return [text[a:b] for a, b in sentence_spans(text)]


def strip_citations(sentence: str) -> tuple[str, list[int]]:
    """The sentence without its ``[n]`` markers, and the numbers they cite."""
    cited = [int(n) for m in re.findall(_CITE, sentence) for n in re.findall(r"\d+", m)]
    text = _CITE_RE.sub("", sentence).strip()
    text = re.sub(r"\s+([.!?,;:])", r"\1", text)  # "metres [1]." -> "metres."
    return text, list(dict.fromkeys(cited))


class _Evidence:
    """The passages split into sentences, with what the support checks need."""

    def __init__(self, passages: list[str], labels: list[str] | None = None):
        self.texts, self.source, self.spans, self.context, self.topic = [], [], [], [], []
        for n, passage in enumerate(passages, 1):
            spans = sentence_spans(passage)
            label = labels[n - 1] if labels else ""
            self.topic.append(topic_words([passage[a:b] for a, b in spans]))
            for i, (a, b) in enumerate(spans):
                self.texts.append(passage[a:b])
                self.source.append(n)
                self.spans.append((a, b))
                self.context.append(context_of(passage, spans, i, label))


def verdict(similarity: float, found: Check) -> tuple[str, float]:
    """``(status, support)`` of a sentence from its evidence's cosine and lexical check.

    "supported": close evidence (``SUPPORTED``; ``CLOSE_ENOUGH`` when it holds every
    content word of the sentence) that states the sentence's key terms;
    "partly": close evidence where a check failed (its reason says which);
    "not found": nothing close. A wrong number gives a support of 0.
    """
    if found.ok and similarity >= (CLOSE_ENOUGH if found.strong else SUPPORTED):
        return "supported", similarity
    support = 0.0 if found.hard else similarity * PARTLY_FACTOR
    if similarity >= SUPPORTED and found.coverage >= MIN_PARTLY_COVERAGE:
        return "partly", support
    return "not found", support


def judge(sentence: str, evidence: _Evidence, sims, question: str = "") -> dict:
    """The best verdict for one sentence over the evidence sentences (``sims``: cosines).

    The closest ``CANDIDATES`` evidence sentences are checked in turn: the first
    that supports the sentence wins, else the closest one that partly does.
    """
    order = sorted(range(len(sims)), key=lambda j: -float(sims[j]))[:CANDIDATES]
    best = None
    for j in order:
        topic = evidence.topic[evidence.source[j] - 1]
        found = check(sentence, evidence.texts[j], evidence.context[j], topic, question)
        status, support = verdict(float(sims[j]), found)
        if status == "supported":
            return {"status": status, "support": support, "j": j, "reason": ""}
        if best is None or (status == "partly" and best["status"] != "partly"):
            best = {"status": status, "support": support, "j": j, "reason": found.reason}
    if best["status"] != "partly":
        best["reason"] = ""
    return best


def ground(
    embedder, question: str, reply: str, passages: list[str], labels: list[str] | None = None
) -> dict:
    """``{"attribution": [...], "extractive": {...} | None}`` in one embedding call.

    ``passages`` are the texts of the passages in the prompt, numbered from 1
    as the prompt cites them; ``labels`` their file and section ("island.md,
    Island > Towns"), what a passage's sentences may refer to without naming
    it. See ``attribute`` and ``extractive``.
    """
    evidence = _Evidence(passages, labels)
    sentences = [strip_citations(s) for s in split_sentences(reply)]
    sentences = [(s, cited) for s, cited in sentences if s]
    if not evidence.texts:
        return {"attribution": [_entry(s, c, None, 0.0, "") for s, c in sentences],
                "extractive": None}  # fmt: skip
    texts = [question or ""] + [s for s, _ in sentences] + evidence.texts
    unique = {t: i for i, t in enumerate(dict.fromkeys(texts))}  # replies often quote passages
    vectors = embedder.encode(list(unique), fast=True)[[unique[t] for t in texts]]
    q, r, e = vectors[0], vectors[1 : 1 + len(sentences)], vectors[1 + len(sentences) :]
    attribution = []
    sims = r @ e.T if len(sentences) else None
    for i, (text, cited) in enumerate(sentences):
        found = judge(text, evidence, sims[i], question)
        j = found["j"]
        source = evidence.source[j] if found["status"] == "supported" else None
        attribution.append(_entry(
            text, cited, source, found["support"], evidence.texts[j], found["status"],
            found["reason"], evidence.source[j],
        ))  # fmt: skip
    return {"attribution": attribution, "extractive": _extractive(q, e, evidence, passages)}


def _entry(
    sentence: str, cited: list[int], source, support: float, evidence: str,
    status: str = "not found", reason: str = "", near: int | None = None,
) -> dict:  # fmt: skip
    return {
        "sentence": sentence,
        "source": source,
        "support": round(max(0.0, support), 4),
        "evidence": evidence,
        "cited": cited,
        "status": status,
        "reason": reason,
        "evidence_source": near,
    }


def _extractive(q, e, evidence: _Evidence, passages: list[str]) -> dict | None:
    """The passage sentence closest to the question, with its offsets in its passage."""
    scores = e @ q
    candidates = [
        j for j, t in enumerate(evidence.texts) if len(t.split()) >= MIN_QUOTE_WORDS
    ] or list(range(len(evidence.texts)))
    if not candidates:
        return None
    best = max(candidates, key=lambda j: float(scores[j]))
    n = evidence.source[best]
    start, end = evidence.spans[best]
    return {
        "sentence": evidence.texts[best],
        "source": n,
        "passage": passages[n - 1],
        "start": start,
        "end": end,
        "score": round(float(scores[best]), 4),
    }


def attribute(embedder, reply: str, passages: list[str]) -> list[dict]:
    """Per reply sentence: ``{sentence, source: n | None, support, evidence, cited}``.

    ``source`` is the number of the passage that supports the sentence (None:
    not found in the passages); ``support`` the cosine similarity to the best
    evidence sentence after the number and name checks; ``evidence`` that
    sentence; ``cited`` the ``[n]`` markers the model wrote in the sentence.
    """
    return ground(embedder, "", reply, passages)["attribution"]


def extractive(embedder, question: str, passages: list[str]) -> dict | None:
    """The passage sentence that best answers ``question``, to show as a quote.

    ``{sentence, source: n, passage, start, end, score}``:
    ``passage[start:end] == sentence``. None without passages.
    """
    return ground(embedder, question, "", passages)["extractive"]


def judge_pairs(embedder, rows: list[dict]) -> list[dict]:
    """``{status, support, reason}`` for rows ``{question, sentence, evidence, passage, where}``.

    The verdict ``ground`` gives ``sentence`` when its evidence is that sentence
    of ``passage`` (``where``: the passage's label): how the labelled pairs of
    tests/data/support_labels.jsonl are scored.
    """
    texts = list(dict.fromkeys(t for r in rows for t in (r["sentence"], r["evidence"])))
    if not texts:
        return []
    vectors = embedder.encode(texts)  # float32: the same figures on every CPU
    at = {t: i for i, t in enumerate(texts)}
    out = []
    for r in rows:
        similarity = float(vectors[at[r["sentence"]]] @ vectors[at[r["evidence"]]])
        passage, spans = r["passage"], sentence_spans(r["passage"])
        i = next((k for k, (a, b) in enumerate(spans) if passage[a:b] == r["evidence"]), None)
        context = context_of(passage, spans, i, r["where"]) if i is not None else (r["where"], "")
        topic = topic_words([passage[a:b] for a, b in spans])
        found = check(r["sentence"], r["evidence"], context, topic, r["question"])
        status, support = verdict(similarity, found)
        reason = found.reason if status == "partly" else ""
        out.append({"status": status, "support": round(support, 4), "reason": reason})
    return out
