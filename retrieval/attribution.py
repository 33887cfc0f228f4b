"""Which retrieved passage supports each sentence of a reply, and the best quote for a question.

Every sentence of the reply is compared (cosine of all-MiniLM-L6-v2
embeddings) with every sentence of the passages that were in the prompt. A
close paraphrase is not enough: the sentence's numbers must appear in the
evidence (so "27 days" is not supported by "72 days"; "three" and "3" are the
same number) and its names in the evidence's passage, else its support is cut.
A sentence is attributed to the passage of its best evidence when the support
reaches ``SUPPORTED``. One batched embedding call covers the question, the
reply and the passages; nothing is cached between calls.

Everything returned is plain data: lists and dicts of strings and numbers.
"""

from __future__ import annotations

import re

from retrieval.numerals import numbers_in

# Support at or above this attributes a sentence. On MiniLM, a sentence copied or
# lightly reworded from a passage scores 0.8-1.0, a loose paraphrase 0.6-0.8 and an
# unrelated sentence on the same topic 0.2-0.5 (tests/test_attribution.py).
SUPPORTED = 0.55
# Each name missing from the evidence's passage halves the support.
NAME_PENALTY = 0.5
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
_NAME_RE = re.compile(r"\b[A-Z][\w'’-]*[a-z][\w'’-]*\b")
# Capitalised words that are not names: sentence openers a reply uses on its own.
NOT_NAMES = {
    "The", "A", "An", "It", "Its", "This", "That", "These", "Those", "There", "They", "He",
    "She", "We", "You", "I", "In", "On", "At", "For", "And", "But", "Or", "If", "When", "Yes",
    "No", "According", "Answer", "Question", "Because", "So", "As", "After", "Before", "Each",
    "Every", "Some", "Many", "Most", "What", "Which", "Who", "How", "Why", "Where", "Based",
    "Reference", "Sure", "However", "Also", "Then", "To", "From", "By", "With", "Of", "Here",
    "Their", "His", "Her", "Our", "Your", "My", "One", "Two", "Three", "Both", "All", "Not",
    "Only", "Since", "While", "During", "Today", "Instead", "Yet", "Thus", "Therefore",
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


def _names(text: str) -> set[str]:
    """Capitalised words that look like names, lower-cased."""
    return {w.lower() for w in _NAME_RE.findall(text) if w not in NOT_NAMES}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w'’-]+", text.lower()))


class _Evidence:
    """The passages split into sentences, with what the support checks need."""

    def __init__(self, passages: list[str]):
        self.texts, self.source, self.spans, self.numbers = [], [], [], []
        self.passage_words = [_words(p) for p in passages]
        for n, passage in enumerate(passages, 1):
            spans = sentence_spans(passage)
            for i, (a, b) in enumerate(spans):
                lo, hi = spans[max(0, i - 1)][0], spans[min(len(spans) - 1, i + 1)][1]
                self.texts.append(passage[a:b])
                self.source.append(n)
                self.spans.append((a, b))
                self.numbers.append(numbers_in(passage[lo:hi]))  # the sentence and its neighbours

    def factor(self, numbers: set[str], names: set[str], j: int) -> float:
        """How much of a sentence's support survives against evidence sentence ``j``."""
        if numbers - self.numbers[j]:
            return 0.0
        missing = len(names - self.passage_words[self.source[j] - 1])
        return NAME_PENALTY**missing


def ground(embedder, question: str, reply: str, passages: list[str]) -> dict:
    """``{"attribution": [...], "extractive": {...} | None}`` in one embedding call.

    ``passages`` are the texts of the passages in the prompt, numbered from 1
    as the prompt cites them. See ``attribute`` and ``extractive``.
    """
    evidence = _Evidence(passages)
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
        numbers, names = numbers_in(text), _names(text)
        scores = [float(sims[i, j]) * evidence.factor(numbers, names, j) for j in range(len(e))]
        # ties (every score zeroed by a wrong number) go to the closest sentence as evidence
        best = max(range(len(scores)), key=lambda j: (scores[j], float(sims[i, j])))
        support = max(0.0, scores[best])
        source = evidence.source[best] if support >= SUPPORTED else None
        attribution.append(_entry(text, cited, source, support, evidence.texts[best]))
    return {"attribution": attribution, "extractive": _extractive(q, e, evidence, passages)}


def _entry(sentence: str, cited: list[int], source, support: float, evidence: str) -> dict:
    return {
        "sentence": sentence,
        "source": source,
        "support": round(support, 4),
        "evidence": evidence,
        "cited": cited,
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
