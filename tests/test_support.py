""" "Supported" must mean the passage states the claim: the lexical checks, the three reported
cases (a shared year, a swapped colour, a name that is only the passage's topic), the
"partly supported" reason on the page, and the labelled pairs of tests/data/support_labels.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.attribution import ground, judge_pairs
from retrieval.support import check
from ui.grounded import attributed_markdown, evidence_rows

LABELS = Path(__file__).parent / "data" / "support_labels.jsonl"
# The goal of "supported" on the held-out (report) split of the labelled pairs
# (bench/eval_rag.py --support prints the figures per split).
FLOOR = {"precision": 0.9, "recall": 0.7}

FESTIVAL = (
    "Harbourtown is a port on the east coast. Its lantern festival began in 1873, when the "
    "fishing fleet came home through a storm. The harbour wall was rebuilt in 1921."
)
SOCIETY = (
    "Members of the Harbourtown rowing society wear the violet badge at every regatta. "
    "New members receive a plain white cap."
)
OSKARBY = (
    "Oskarby is a small mill town on the river Lenn. The town bridge was designed by the "
    "engineer Lena Holm and opened in 1904."
)
PASSAGES = [FESTIVAL, SOCIETY, OSKARBY]


@pytest.fixture(scope="module")
def embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for this module."""
    from retrieval.embedder import Embedder

    return Embedder()


# -- the checks on their own (pure logic) ----------------------------------------------------


def test_a_shared_number_about_another_thing_is_not_support():
    found = check("The rowing society was founded in 1873.", FESTIVAL.split(". ")[1])
    assert not found.ok and "1873" in found.reason and "festival began" in found.reason
    assert check("The lantern festival began in 1873.", FESTIVAL.split(". ")[1]).ok
    found = check(
        "Orrinese has fourteen vowels.", "Orrinese has five vowels and fourteen consonants."
    )
    assert not found.ok and found.reason == "the passage gives 14 consonants, not 14 vowels"


def test_a_swapped_colour_is_not_support():
    found = check("Members wear the blue badge at every regatta.", SOCIETY.split(". ")[0])
    assert not found.ok and found.reason == "the passage says “violet”, not “blue”"
    assert check("Members wear the violet badge at every regatta.", SOCIETY.split(". ")[0]).ok


def test_a_name_that_is_only_the_topic_is_not_the_agent():
    bridge = "The town bridge was designed by the engineer Lena Holm and opened in 1904."
    found = check("The town bridge was designed by Oskarby.", bridge, ("Oskarby", ""))
    assert not found.ok and found.reason == "the passage names Lena Holm, not Oskarby"
    assert check("The bridge was designed by Lena Holm.", bridge).ok
    # A name the evidence refers back to ("It", its heading) is fine; what "It" is must
    # still be said (by the sentence before), not guessed.
    before = "The town bridge crosses the Lenn."
    assert check("Oskarby's bridge opened in 1904.", "It opened in 1904.", ("Oskarby", before)).ok
    assert not check("Oskarby's bridge opened in 1904.", "It opened in 1904.", ("Oskarby", "")).ok


def test_numbers_negation_and_clauses():
    lamp = "The light can be seen 18 miles out at sea."
    assert check("The light can be seen 18 miles out.", lamp).ok
    assert check("The light can be seen 81 miles out.", lamp).hard
    assert not check("The light cannot be seen at sea.", "The light can be seen far out at sea.").ok
    dough = "The dough is left to rise for only forty minutes and keeps for a week."
    assert not check(
        "The dough rises for forty minutes, which means it is baked on a hot stone.", dough
    ).ok  # the second clause is not stated
    # "The answer is 7." is about what the question asks
    team = "Each team has seven players: two spinners, three runners and two keepers."
    assert check("The answer is 7.", team, question="How many players are on a team?").ok
    assert not check("The answer is 7.", team, question="How many strides may a runner take?").ok


def test_what_is_said_of_a_name_or_number_must_be_said_of_it_in_the_passage():
    mill = ("Quillfeather Robotics was founded in 2009 by the engineer Odalys Fenwright in a "
            "mill in the town of Marrowgate.")  # fmt: skip
    found = check("Quillfeather Robotics was founded by the engineer Marrowgate.", mill)
    assert not found.ok and found.reason.endswith("not with “engineer”"), found
    assert check("Quillfeather Robotics was founded by the engineer Odalys Fenwright.", mill).ok
    rivers = "Rivers drain the hills: the Amber, the Lisk and the Corrow, which tumbles down."
    found = check("The Lisk tumbles down.", rivers)
    assert not found.ok and found.reason == "the passage says “tumbles” of Corrow, not of Lisk"
    crown = "A crown is worth five points instead of three."
    assert not check("A crown is worth three points.", crown).ok
    assert check("A crown is worth five points.", crown).ok
    # a word the sentence adds to what the question asks must be in the passage
    people = "The island is home to roughly 38,000 people."
    found = check("The popular island has 38,000 people.", people, question="How many live there?")
    assert not found.ok and found.reason == "the passage does not say “popular”"
    # a "not" in another part of the passage does not deny this part
    ledger = "The ledger holds sixty-two recipes, but many pages can no longer be read."
    assert check("The ledger holds sixty-two recipes.", ledger).ok


# -- through ground() on the real embedder ---------------------------------------------------


def test_the_three_reported_cases_are_partly_supported_with_a_reason(embedder):
    reply = (
        "The Harbourtown lantern society was founded in 1873. "
        "Members of the rowing society wear the blue badge at every regatta. "
        "The town bridge was designed by Oskarby. "
        "The town bridge was designed by the engineer Lena Holm."
    )
    labels = ["harbourtown.md, Harbourtown", "harbourtown.md, Societies", "oskarby.md, Oskarby"]
    found = ground(embedder, "", reply, PASSAGES, labels)["attribution"]
    assert [a["status"] for a in found] == ["partly", "partly", "partly", "supported"], found
    assert [a["source"] for a in found] == [None, None, None, 3]
    assert [a["evidence_source"] for a in found][:2] == [1, 2] and found[2]["evidence_source"] == 3
    assert found[0]["reason"] == (
        "the passage gives 1873 for “lantern festival began in 1873 when the”, not for “founded”"
    )
    assert "1873" in found[0]["evidence"] and "festival began" in found[0]["evidence"]
    assert found[1]["reason"] == "the passage says “violet”, not “blue”"
    # Oskarby is the town the passage is about, not who designed the bridge
    assert "Oskarby" in found[2]["reason"] and "designed" in found[2]["reason"], found[2]
    assert all(a["support"] < 0.55 for a in found[:3]) and found[3]["reason"] == ""


def test_partly_supported_shows_its_reason_on_the_page():
    entry = {"sentence": "The <b>society</b> was founded in 1873.", "source": None,
             "support": 0.4, "evidence": "Its lantern festival began in 1873.", "cited": [],
             "status": "partly", "evidence_source": 1,
             "reason": "the passage gives 1873 for “its lantern festival began in 1873”",
             }  # fmt: skip
    md = attributed_markdown("", [entry])
    assert md == (
        "The &lt;b&gt;society&lt;/b&gt; was founded in 1873. *(partly supported [1]: the "
        "passage gives 1873 for “its lantern festival began in 1873”)*"
    )
    assert evidence_rows([entry])[0][1].startswith("partly supported [1]: the passage gives")
    assert "not found" not in md


# -- the labelled pairs ----------------------------------------------------------------------


def load_labels() -> list[dict]:
    return [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]


def test_labelled_set_is_large_and_well_formed():
    rows = load_labels()
    assert len(rows) >= 250 and sum(r["label"] == "supported" for r in rows) >= 60
    # split by question: no question is in both splits
    splits = {}
    for r in rows:
        assert splits.setdefault(r["question"], r["split"]) == r["split"], r["question"]
    fields = {"question", "sentence", "evidence", "passage", "where", "label", "kind", "origin",
              "split"}  # fmt: skip
    kinds = {r["kind"] for r in rows}
    assert {"wrong-number", "wrong-entity", "wrong-relation", "supported"} <= kinds
    for r in rows:
        assert fields <= set(r) and r["evidence"] in r["passage"]
        assert r["label"] in ("supported", "not supported") and r["split"] in ("tune", "report")
        assert (r["label"] == "supported") == (r["kind"] == "supported")
        assert r["origin"] in ("natural", "constructed")
    for kind in ("wrong-number", "wrong-entity", "wrong-relation"):
        assert sum(r["kind"] == kind for r in rows) >= 20, kind


def test_precision_and_recall_of_supported_on_the_labelled_set(embedder):
    rows = [r for r in load_labels() if r["split"] == "report"]
    assert sum(r["label"] == "supported" for r in rows) >= 30  # enough to mean something
    verdicts = judge_pairs(embedder, rows)
    said = [v["status"] == "supported" for v in verdicts]
    truth = [r["label"] == "supported" for r in rows]
    hits = sum(s and t for s, t in zip(said, truth, strict=True))
    precision, recall = hits / max(1, sum(said)), hits / sum(truth)
    assert precision >= FLOOR["precision"] and recall >= FLOOR["recall"], (precision, recall)
    # every reported kind of error is caught most of the time
    for kind in ("wrong-number", "wrong-entity", "wrong-relation"):
        wrong = [s for s, r in zip(said, rows, strict=True) if r["kind"] == kind]
        assert sum(wrong) <= len(wrong) / 3, kind
