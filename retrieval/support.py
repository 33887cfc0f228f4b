"""Does an evidence sentence state what a reply sentence claims? The lexical checks.

Embeddings tell that two sentences are about the same thing, not that they say
the same thing about it: "founded in 1873" sits close to "the festival began in
1873", "the blue badge" to "the violet badge". Before a sentence counts as
supported, its key terms must be stated about the same subject in the evidence:

- numbers: each one is in the evidence sentence, with words around it in
  common (what the number is attached to: "began"/"festival" is not
  "founded"/"society"; the word just before it in the claim is near it in the
  evidence), not as what it is not ("instead of three"), and the same unit;
- names (and quoted words): each one is in the evidence sentence, or in the
  words it refers back to (its passage's heading, the question, or the
  sentence before when it opens with "It", "They"...), and then only when
  neither names anything else and the name is not the agent ("designed by
  Oskarby" needs Oskarby in the sentence itself); a name the evidence has is
  said with the same words ("the engineer Marrowgate" is not "the engineer
  Odalys Fenwright ... the town of Marrowgate");
- contrasts: a word of a closed kind (colour, month, direction, more/less,
  raw/cooked, material...) the evidence replaces with another of its kind;
- negation: "not"/"never" on one side only, part by part;
- words: every content word the claim adds to the question (its relation and
  things: founded, designed, badge, popular) is in the evidence, and enough of
  all of them (the question's words it restates may be missing).

Plain Python over strings; retrieval/attribution.py adds the embedding side.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from retrieval.numerals import digits_for_words

# Share of the claim's content words that must be found in the evidence (or the
# words it refers back to); tuned on the tune split of tests/data/support_labels.jsonl.
MIN_COVERAGE = 0.6
# Content words either side of a number that count as what it is attached to.
NUMBER_WINDOW = 4
# Content words either side of a name that count as what is said of it.
NAME_WINDOW = 3

STOPWORDS = set(
    "a an the and or but of to in on at for from by with as into onto over under about "
    "after before between through during than then so such that this these those there "
    "here is are was were be been being am do does did done doing has have had having "
    "can could may might must shall should will would it its it's they them their theirs "
    "he him his she her hers we us our you your i me my which who whom whose what when "
    "where why how also only just very more most much many some any each every all both "
    "either neither other another same own up down out off again once if because while "
    "until per one ones s t called named known using used use uses like well one's "
    "answer question yes sure according passage document documents text reference "
    "around roughly approximately nearly almost exactly precisely get gets got getting "
    "type types kind kinds sort away located situated times near behind beside beyond across "
    "along against among within toward towards".split()
)  # fmt: skip
NEGATIONS = {"not", "never", "no", "cannot", "none", "nobody", "nothing", "nowhere", "neither"}
# Words whose kind has several members, only one of which can be true of a thing.
CONTRASTS = [
    set(
        "red orange yellow green blue violet purple pink brown black white grey gray "
        "silver golden gold amber tawny crimson scarlet indigo".split()
    ),  # fmt: skip
    set(
        "january february march april may june july august september october november "
        "december".split()
    ),  # fmt: skip
    set("monday tuesday wednesday thursday friday saturday sunday".split()),
    {"spring", "summer", "autumn", "fall", "winter"},
    {"north", "south", "east", "west", "northern", "southern", "eastern", "western"},
    {"first", "second", "third", "fourth", "fifth", "last"},
    {"left", "right"},
    {"morning", "afternoon", "evening", "night", "midnight", "noon", "dawn", "dusk"},
    {"inner", "outer", "inside", "outside", "upper", "lower"},
    {"more", "less", "fewer"},
    {"most", "least"},
    {"raw", "cooked"},
    {"always", "often", "usually", "sometimes", "rarely", "seldom"},
    {"sweet", "sour", "bitter", "salty"},
    {"good", "bad"},
    {"hot", "cold", "warm", "cool"},
    {"circle", "square", "triangle", "oval"},
    {"iron", "steel", "stone", "wooden", "brass", "copper", "glass", "concrete"},
    {"cheapest", "dearest"},
]
_CONTRAST_OF = {w: i for i, kind in enumerate(CONTRASTS) for w in kind}
# Past forms that suffix stripping does not bring back to the word of the present.
IRREGULAR = {
    "began": "begin", "begun": "begin", "built": "build", "won": "win", "made": "make",
    "ran": "run", "grew": "grow", "grown": "grow", "wrote": "write", "written": "write",
    "sold": "sell", "kept": "keep", "held": "hold", "led": "lead", "lost": "lose",
    "gave": "give", "given": "give", "took": "take", "taken": "take", "came": "come",
    "went": "go", "gone": "go", "saw": "see", "seen": "see", "chose": "choose",
    "chosen": "choose", "ate": "eat", "eaten": "eat", "bought": "buy", "brought": "bring",
    "thought": "think", "told": "tell", "left": "leave", "met": "meet", "paid": "pay",
    "put": "put", "rose": "rise", "risen": "rise", "fell": "fall", "fallen": "fall",
    "ground": "grind", "drew": "draw", "drawn": "draw", "flew": "fly", "flown": "fly",
    "lay": "lie", "laid": "lay", "stood": "stand", "struck": "strike", "meters": "metre",
    "meter": "metre", "liter": "litre", "liters": "litre", "m": "metre", "km": "kilometre",
    "cm": "centimetre", "kg": "kilogram", "g": "gram", "hz": "hertz", "mins": "minute",
    "min": "minute", "hrs": "hour", "hr": "hour", "kilometers": "kilometre",
    "centimeters": "centimetre", "color": "colour", "colors": "colour", "gray": "grey",
    "final": "last",
}  # fmt: skip
# Words that say the same thing in the sentences of a reply and of a passage: each
# group meets at its first word's stem.
SYNONYMS = [
    ("highest", "tallest"), ("summit", "mountain", "peak"), ("cost", "price", "priced"),
    ("contain", "hold"), ("player", "people", "person", "member"),
    ("rise", "stand", "sit", "lie", "tower"), ("run", "last"), ("pick", "harvest", "gather"),
    ("see", "visible"),
]  # fmt: skip
_SYNONYM_OF: dict[str, str] = {}
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+(?:['’][^\W\d_]+)?")
_PRONOUN_START = {"it", "its", "they", "their", "them", "he", "his", "she", "her", "this",
                  "these", "those", "there", "the"}  # fmt: skip
_AGENT = {"by"}
# Where a sentence joins a second claim to its first: each part must be stated.
_CLAUSE_RE = re.compile(
    r";|,\s*(?:which|but|so|and|while|because|although|though|where|when)\b"
    r"|\s(?:because|but|although|which means|so that)\s"
)

_QUOTED_RE = re.compile(r"[\"“][^\"“”]{1,30}[\"”]")
# Finer: the parts of a sentence a "not" can belong to.
_PART_RE = re.compile(r"[;:,]|\s(?:and|but|or|so that|because|although|while|whereas)\s")


@functools.lru_cache(maxsize=8192)  # a pure function of the word; replies repeat words
def stem(word: str) -> str:
    """A crude stem: "founded", "founding" and "founder" meet at "found"; "began" at "begin"."""
    word = word.lower().replace("’", "'")
    word = re.sub(r"'s?$", "", word)
    if word in IRREGULAR:
        return IRREGULAR[word]
    for suffix in ("ings", "ing", "edly", "ed", "ies", "es", "s", "ly"):
        if suffix == "es" and not re.search(r"(?:ss|x|z|ch|sh)es$", word):
            continue
        if suffix == "s" and word.endswith("ss"):
            break  # "pass", "glass"  # "minutes" is "minute" + "s", "boxes" is "box" + "es"
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    word = IRREGULAR.get(word, word)[:6]
    return _SYNONYM_OF.get(word, word)


_SYNONYM_OF.update({stem(w): stem(group[0]) for group in SYNONYMS for w in group})
stem.cache_clear()  # the stems above were cached before the synonyms were known


@dataclass
class Tokens:
    """A sentence as words: ``lower`` words in order, their stems, numbers and names."""

    words: list[str] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    text: str = ""

    @classmethod
    def of(cls, text: str) -> Tokens:
        """The tokens of ``text`` (number words become digits: "twelve" is "12")."""
        text = digits_for_words(text, keep_one=True)
        out = cls(text=text)
        quoted = [m.span() for m in _QUOTED_RE.finditer(text)]
        for i, m in enumerate(_TOKEN_RE.finditer(text)):
            word = m.group(0)
            lower = word.lower().replace("’", "'")
            out.words.append(lower)
            out.stems.append(lower if lower[0].isdigit() else stem(lower))
            in_quotes = any(a < m.start() < b for a, b in quoted)  # "hesh": a name too
            if (i > 0 and word[0].isupper() or in_quotes) and lower not in STOPWORDS:
                out.names.add(re.sub(r"'s$", "", lower))
        return out

    def content(self) -> set[str]:
        """Stems of the content words (not numbers, not stop words)."""
        return {
            s for w, s in zip(self.words, self.stems, strict=True)
            if not w[0].isdigit() and w not in STOPWORDS and len(w) > 1
        }  # fmt: skip

    def numbers(self) -> set[str]:
        return {w for w in self.words if w[0].isdigit()}

    def around(self, number: str, window: int = NUMBER_WINDOW) -> tuple[set[str], str | None]:
        """Content stems within ``window`` of each ``number``, and the word right after.

        The word right after ("minutes", "vowels") says what the number counts.
        """
        near, unit = set(), None
        for i, w in enumerate(self.words):
            if w != number:
                continue
            left = [j for j in range(i - 1, -1, -1) if self._content_at(j)][:window]
            right = [j for j in range(i + 1, len(self.words)) if self._content_at(j)]
            near |= {self.stems[j] for j in left + right[:window]}
            if i + 1 < len(self.words) and self._content_at(i + 1):
                unit = unit or self.words[i + 1]
        return near, unit

    def after(self, number: str, window: int = NUMBER_WINDOW) -> set[str]:
        """Content stems in the ``window`` words after ``number``."""
        i = self.words.index(number)
        return {self.stems[j] for j in range(i + 1, min(len(self.words), i + 1 + window))
                if self._content_at(j)}  # fmt: skip

    def before(self, word: str, step: int = -1) -> int | None:
        """The index of the content word (not a name) closest before ``word``, if near.

        ``step=1``: the closest after it.
        """
        i = self.words.index(word)
        end = (
            max(-1, i - 1 - NUMBER_WINDOW)
            if step < 0
            else min(len(self.words), i + 1 + NUMBER_WINDOW)
        )
        near = [j for j in range(i + step, end, step)
                if self._content_at(j) and self.words[j] not in self.names]  # fmt: skip
        return near[0] if near else None

    def _content_at(self, j: int) -> bool:
        w = self.words[j]
        return not w[0].isdigit() and w not in STOPWORDS and len(w) > 1


@dataclass
class Check:
    """The verdict of the lexical checks: ``ok``, or the reason support is only partial."""

    ok: bool
    reason: str = ""
    hard: bool = False  # a number of the claim is missing from the evidence altogether
    coverage: float = 1.0
    missing: str = ""  # the claim's content words the evidence does not have
    strong: bool = False  # every content word of the claim is found, not just most


def context_of(
    passage: str, spans: list[tuple[int, int]], i: int, label: str = ""
) -> tuple[str, str]:
    """What evidence sentence ``i`` of ``passage`` may refer back to: ``(heading, previous)``.

    ``heading``: the passage's ``label`` (its file and section path, as the prompt
    shows it), the heading above the sentence (a line without a full stop, or a
    ``#`` line) and the passage's title line; ``previous``: when the sentence
    opens with a pronoun or "The", the sentence before it.
    """
    a, _ = spans[i]
    before = passage[:a]
    heading = ""
    for line in reversed(before.splitlines()):
        line = line.strip()
        if line and (line.startswith("#") or not re.search(r"[.!?:]$", line)):
            heading = line.lstrip("#").strip()
            break
    first = re.match(r"\W*(\w+)", passage[a:])
    previous = ""
    if i > 0 and first and first.group(1).lower() in _PRONOUN_START:
        previous = passage[spans[i - 1][0] : spans[i - 1][1]]
    title = passage[spans[0][0] : spans[0][1]] if spans else ""
    title = title if len(title.split()) <= 6 else ""
    return " ".join([re.sub(r"[_.>,]", " ", label), heading, title]), previous


def check(
    claim: str, evidence: str, context: tuple[str, str] = ("", ""),
    topic: frozenset = frozenset(), question: str = "",
) -> Check:  # fmt: skip
    """Whether ``evidence`` (with the ``context`` it refers back to) states ``claim``.

    ``topic``: stems common across the evidence's passage (see ``topic_words``),
    which say what the passage is about, not what a number there is attached to.
    A claim of fewer than two content words, or one that calls itself the answer
    ("The answer is: the lantern gill."), is about what ``question`` asks, so the
    question's words join it.
    """
    s, e = Tokens.of(claim), Tokens.of(evidence)
    heading, previous = Tokens.of(context[0]), Tokens.of(context[1])
    asked = Tokens.of(question)
    # what "It" refers back to names a thing of its own ("It" after "The Wren costs...")
    referent = previous.names if e.words[:1] and e.words[0] in _PRONOUN_START - {"the"} else set()
    c = Tokens(heading.words + previous.words, heading.stems + previous.stems, referent)
    if question and (len(s.content() - s.names) < 2 or "answer" in s.words):
        claim = f"{question.rstrip(' ?')}: {claim}"
        s = Tokens.of(claim)
    given = asked.content() | set(asked.words)
    for test in (_numbers, _names, _contrasts, _negation):
        found = test(s, e, Tokens(c.words + asked.words, c.stems + asked.stems, c.names), topic)
        if found is not None:
            return found
    clauses = [Tokens.of(part) for part in _CLAUSE_RE.split(claim)]
    worst = min((_coverage(t, e, c, given) for t in clauses if len(t.content() - t.names) >= 2),
                key=lambda found: (found.ok, found.coverage), default=None)  # fmt: skip
    return worst if worst is not None else _coverage(s, e, c, given)


def topic_words(sentences: list[str]) -> frozenset:
    """Stems in more than a third of ``sentences`` (at least 3): what a passage is about."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for st in Tokens.of(sentence).content():
            counts[st] = counts.get(st, 0) + 1
    floor = max(3, len(sentences) / 3)
    return frozenset(st for st, n in counts.items() if n >= floor)


def _phrase(tokens: Tokens, number: str) -> str:
    """The words around ``number`` in ``tokens``, for a reason."""
    i = tokens.words.index(number)
    return " ".join(tokens.words[max(0, i - 4) : i + 3])


def _numbers(s: Tokens, e: Tokens, c: Tokens, topic: frozenset) -> Check | None:
    theirs = e.numbers()
    for number in sorted(s.numbers()):
        if number not in theirs:
            said = ", ".join(sorted(theirs)) if theirs else "no number"
            return Check(False, f"the passage gives {said}, not {number}", hard=True)
        mine, unit = s.around(number)
        near, their_unit = e.around(number)
        # "6 guests" is in "6 hungry guests"; "14 vowels" is not in "14 consonants"
        other = stem(their_unit or "") not in s.after(number, 2) | {stem(unit or "")}
        if unit and their_unit and other and stem(unit) not in e.after(number, 2):
            return Check(False, f"the passage gives {number} {their_unit}, not {number} {unit}")
        if mine - topic and not (mine & near) - topic:
            return Check(False, f"the passage gives {number} for “{_phrase(e, number)}”")
        i = e.words.index(number)
        if {"instead", "rather"} & set(
            e.words[max(0, i - 3) : i]
        ):  # "five points instead of three"
            return Check(
                False, f"the passage gives {number} as what it is not: “{_phrase(e, number)}”"
            )
        j = s.before(number)  # what the number is said of: "released every 400 hertz"
        if j is not None and s.stems[j] not in near | topic | set(c.stems) | s.names:
            return Check(False, f"the passage gives {number} for “{_phrase(e, number)}”, "
                                f"not for “{s.words[j]}”")  # fmt: skip
    return None


def _names(s: Tokens, e: Tokens, c: Tokens, topic: frozenset) -> Check | None:
    missing = s.names - set(e.words) - set(e.stems)
    for name in sorted(s.names & set(e.words)):  # "by the engineer Marrowgate": what is it?
        near, _ = e.around(name, NAME_WINDOW)
        j = s.before(name)
        if j is not None and s.stems[j] not in near | topic | set(c.stems):
            return Check(False, f"the passage names {name.title()} in “{_phrase(e, name)}”, "
                                f"not with “{s.words[j]}”")  # fmt: skip
        # "The Lisk tumbles": in the passage, who "tumbles" is the name closest before it
        j = s.before(name, 1)
        whose = _name_before(e, s.stems[j]) if j is not None else None
        if whose and whose not in s.names:
            return Check(False, f"the passage says “{s.words[j]}” of {whose.title()}, "
                                f"not of {name.title()}")  # fmt: skip
    if not missing:
        return None
    others = (e.names | c.names) - s.names - set(s.words)
    for name in sorted(missing):
        if name not in c.words or others or _after_agent(s, name):
            named = " ".join(w.title() for w in dict.fromkeys(e.words) if w in others)
            instead = f"names {named}" if named else f"does not name {name.title()} here"
            return Check(False, f"the passage {instead}, not {name.title()}" if named else
                         f"the passage {instead}")  # fmt: skip
    return None


def _name_before(e: Tokens, st: str) -> str | None:
    """The name closest before the first word of ``e`` with stem ``st``."""
    if st not in e.stems:
        return None
    k = e.stems.index(st)
    return next((e.words[i] for i in range(k - 1, -1, -1) if e.words[i] in e.names), None)


def _after_agent(s: Tokens, name: str) -> bool:
    i = s.words.index(name) if name in s.words else -1
    return i > 0 and s.words[i - 1] in _AGENT


def _contrasts(s: Tokens, e: Tokens, c: Tokens, topic: frozenset) -> Check | None:
    theirs = set(e.words)
    for word in s.words:
        kind = _CONTRAST_OF.get(word)
        if kind is None or word in theirs:
            continue
        other = [w for w in e.words if _CONTRAST_OF.get(w) == kind]
        if other:
            return Check(False, f"the passage says “{other[0]}”, not “{word}”")
    return None


def _negation(s: Tokens, e: Tokens, c: Tokens, topic: frozenset) -> Check | None:
    """Each part of the claim against the part of the evidence that shares most words with it.

    "..., but many pages can no longer be read" does not deny the first half.
    """
    theirs = [Tokens.of(p) for p in _PART_RE.split(e.text)]
    for part in (Tokens.of(p) for p in _PART_RE.split(s.text)):
        best = max(theirs, key=lambda t: len(t.content() & part.content()))
        if best.content() & part.content() and _negated(part) != _negated(best):
            return Check(
                False, "the passage says it the other way round (a “not” on one side only)"
            )
    return None


def _negated(t: Tokens) -> bool:
    return bool(NEGATIONS & set(t.words)) or any(w.endswith("n't") for w in t.words)


def _coverage(s: Tokens, e: Tokens, c: Tokens, given: set = frozenset()) -> Check:
    """Every content word the claim adds to the question must be in the evidence.

    Words of the question (``given``) that the claim restates ("the battery lasts")
    may be missing, as long as ``MIN_COVERAGE`` of all its words are found.
    """
    words = s.content() - s.names
    if not words:
        return Check(True, strong=True)
    found = words & (set(e.stems) | set(c.stems))
    coverage = len(found) / len(words)
    new = _missing_words(s, words - found - given)
    missing = ", ".join(f"“{w}”" for w in (new or _missing_words(s, words - found))[:3])
    if coverage >= MIN_COVERAGE and not new:
        return Check(True, coverage=coverage, missing=missing, strong=found | given >= words)
    return Check(False, f"the passage does not say {missing}", coverage=coverage, missing=missing)


def _missing_words(s: Tokens, stems: set[str]) -> list[str]:
    """The claim's own words for ``stems``, in order."""
    return list(dict.fromkeys(w for w, st in zip(s.words, s.stems, strict=True) if st in stems))
