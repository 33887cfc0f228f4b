"""Numbers in text, however they are written: "forty", "40", "1,912", "sixty-two".

Attribution uses these to refuse support for a sentence whose numbers the
evidence does not contain; the RAG evaluation uses them to match key facts.
"""

from __future__ import annotations

import re

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twice": 2, "thrice": 3,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD = "|".join(sorted([*UNITS, *TENS, *SCALES], key=len, reverse=True))
# A run of number words: "two hundred", "sixty-two", "one thousand and twelve".
_WORDS_RE = re.compile(rf"\b(?:{_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_WORD}))*\b", re.IGNORECASE)
# "1,912" -> "1912" (a comma between digit groups of three); "2.5" stays.
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def _words_value(words: str) -> int | None:
    """The value of a run of number words, or None if they do not form one number."""
    total = current = 0
    seen = False
    for word in re.split(r"[\s-]+", words.lower()):
        if word == "and":
            continue
        if word in UNITS:
            current += UNITS[word]
        elif word in TENS:
            current += TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:  # thousand, million
            total += max(current, 1) * SCALES[word]
            current = 0
        seen = True
    return total + current if seen else None


def digits_for_words(text: str, keep_one: bool = False) -> str:
    """``text`` with number words as digits and without thousands separators.

    "sixty-two recipes" -> "62 recipes"; "1,912 metres" -> "1912 metres".
    ``keep_one`` leaves a lone "one" as a word ("the one used", "no one").
    """
    text = _THOUSANDS_RE.sub("", text)

    def replace(match: re.Match) -> str:
        if keep_one and match.group(0).lower() == "one":
            return match.group(0)
        value = _words_value(match.group(0))
        return match.group(0) if value is None else str(value)

    return _WORDS_RE.sub(replace, text)


def numbers_in(text: str) -> set[str]:
    """The numbers ``text`` mentions, as digit strings ("three" and "3" both give "3").

    A lone "one" is left out: it is a pronoun as often as a number.
    """
    return set(_NUMBER_RE.findall(digits_for_words(text, keep_one=True)))


_SPELLING = {"metre": "meter", "litre": "liter", "centre": "center", "colour": "color"}
_SPELLING_RE = re.compile(r"(" + "|".join(_SPELLING) + r")(s?)\b")


def normalise(text: str) -> str:
    """Lower case, digits for number words, US spelling of units, no punctuation, single spaces.

    For matching facts: "1,912 Metres." and "1912 meters" both give "1912 meters".
    """
    text = digits_for_words(text.lower())
    text = _SPELLING_RE.sub(lambda m: _SPELLING[m.group(1)] + m.group(2), text)
    text = re.sub(r"(?<=\d)\.(?=\d)", "\0", text)  # keep decimal points
    text = re.sub(r"[^\w\s\0]", " ", text).replace("\0", ".")
    return " ".join(text.split())


def contains_fact(answer: str, fact: str) -> bool:
    """Whether ``answer`` states ``fact``, whatever the case, punctuation or number style."""
    needle = normalise(fact)
    return bool(needle) and f" {needle} " in f" {normalise(answer)} "
