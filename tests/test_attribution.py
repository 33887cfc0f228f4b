"""Grounded answers: sentence splitting, attribution and extractive quotes on the real MiniLM
embedder, numbers written either way, RAG prompt formats, the display helpers, and /chat."""

from __future__ import annotations

import pytest

from chat.errors import SettingsError
from chat.prompting import PromptRequest, fit_prompt
from chat.rag_formats import FORMATS, best_sentences, get_format
from retrieval.attribution import SUPPORTED, ground, sentence_spans, split_sentences
from retrieval.numerals import contains_fact, digits_for_words, numbers_in
from retrieval.settings import RetrievalSettings
from retrieval.types import Passage
from ui.grounded import attributed_markdown, evidence_rows, extractive_markdown

FERRY = (
    "The ferry Marigold crosses the strait twice a day. Its engine was replaced in 1998. "
    "It can carry twelve cars and two hundred passengers. The crossing takes 72 days in the "
    "old tales, but only forty minutes today."
)
BEES = (
    "Our beekeeper keeps nine hives behind the chapel. In a good summer each hive gives about "
    "twenty kilograms of heather honey. The bees are calm and rarely sting."
)
ORCHARD = (
    "The quince orchard at Pellow Farm has forty trees. Quinces are picked in October. They are "
    "stored in straw until they turn golden and fragrant."
)
LIGHTHOUSE = (
    "The lighthouse on Skerry Point was built in 1871. Its keeper, Ada Wren, climbed 114 steps "
    "every evening to light the lamp. The light can be seen 18 miles out at sea."
)
PASSAGES = [FERRY, BEES, ORCHARD, LIGHTHOUSE]
KEYS = {"sentence", "source", "support", "evidence", "cited", "status", "reason", "evidence_source"}


@pytest.fixture(scope="module")
def embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for this module."""
    from retrieval.embedder import Embedder

    return Embedder()


# -- sentences and numbers (pure logic) -----------------------------------------------------


def test_splitter_keeps_abbreviations_decimals_and_citations_together():
    text = (
        "Mt. Tessaly rises to 1,912 metres [1]. The tank holds 2.5 litres, e.g. for a week. "
        'Is it safe? "Yes!" she said. Dr. Wren agreed. [2]\n- a list item\n## A heading\nlast one'
    )
    assert split_sentences(text) == [
        "Mt. Tessaly rises to 1,912 metres [1].",
        "The tank holds 2.5 litres, e.g. for a week.",
        "Is it safe?",
        '"Yes!" she said.',
        "Dr. Wren agreed. [2]",
        "a list item",
        "A heading",
        "last one",
    ]
    for start, end in sentence_spans(text):
        assert text[start:end] == text[start:end].strip() and end > start


def test_splitter_edge_cases():
    assert split_sentences("") == [] and split_sentences("  \n\n ") == []
    assert split_sentences("No full stop at all") == ["No full stop at all"]
    assert split_sentences("It ended... Then more.") == ["It ended...", "Then more."]
    assert split_sentences("He said e.g. this. And that.") == ["He said e.g. this.", "And that."]


def test_numbers_written_either_way():
    assert digits_for_words("sixty-two recipes and 1,912 metres") == "62 recipes and 1912 metres"
    assert numbers_in("three rivers, 3 bridges, two hundred and fifty boats") == {"3", "250"}
    assert numbers_in("the one used in 1702") == {"1702"}  # a lone "one" is a pronoun too
    assert contains_fact("It rises to 1912 m.", "1,912")
    assert contains_fact("The dough rises for 40 minutes!", "forty minutes")
    assert contains_fact("Order: Object, subject, verb.", "object, subject, verb")
    assert not contains_fact("It takes 27 days.", "72 days")
    assert not contains_fact("It holds 12.5 litres", "2.5 litres")


# -- attribution on the real embedder ------------------------------------------------------


def test_reply_made_of_a_passages_sentences_is_attributed_to_it(embedder):
    reply = (
        "Our beekeeper keeps nine hives behind the chapel [2]. The bees are calm and rarely sting."
    )
    found = ground(embedder, "How many hives?", reply, PASSAGES)["attribution"]
    assert [a["source"] for a in found] == [2, 2]
    assert all(a["support"] > 0.95 for a in found)
    assert found[0]["sentence"] == "Our beekeeper keeps nine hives behind the chapel."
    assert found[0]["cited"] == [2] and found[1]["cited"] == []
    assert set(found[0]) == KEYS
    assert found[0]["status"] == "supported" and found[0]["reason"] == ""


def test_paraphrase_is_supported_and_a_wrong_number_is_not(embedder):
    reply = (
        "The quince orchard at Pellow Farm has 40 trees. "
        "The crossing takes 27 days in the old tales. "
        "Ada Wren climbed 114 steps each evening to light the lamp. "
        "The lighthouse on Skerry Point was built in 1971."
    )
    found = ground(embedder, "", reply, PASSAGES)["attribution"]
    assert found[0]["source"] == 3 and found[0]["support"] >= SUPPORTED  # "forty" == "40"
    assert found[1]["source"] is None and found[1]["support"] == 0.0  # 27 is not 72
    assert "72 days" in found[1]["evidence"]  # the closest sentence is still shown
    assert found[2]["source"] == 4
    assert found[3]["source"] is None  # 1971, not 1871


def test_unrelated_or_wrong_name_sentences_are_unsupported(embedder):
    reply = "Pizza is best eaten hot. The keeper of the Skerry Point light was Tom Bramble."
    found = ground(embedder, "", reply, PASSAGES)["attribution"]
    assert [a["source"] for a in found] == [None, None]


def test_no_passages_or_empty_reply(embedder):
    assert ground(embedder, "q", "Hello there.", []) == {
        "attribution": [
            {"sentence": "Hello there.", "source": None, "support": 0.0, "evidence": "",
             "cited": [], "status": "not found", "reason": "", "evidence_source": None}
        ],
        "extractive": None,
    }  # fmt: skip
    assert ground(embedder, "How many hives?", "", PASSAGES)["attribution"] == []


def test_extractive_picks_the_answering_sentence_with_its_offsets(embedder):
    quote = ground(embedder, "How many steps did the lighthouse keeper climb?", "", PASSAGES)
    ex = quote["extractive"]
    assert ex["source"] == 4
    assert ex["sentence"].startswith("Its keeper, Ada Wren, climbed 114 steps")
    assert ex["passage"] == LIGHTHOUSE
    assert LIGHTHOUSE[ex["start"] : ex["end"]] == ex["sentence"]
    assert 0 < ex["score"] <= 1


def test_attribution_of_a_ten_sentence_reply(embedder):
    # 10 sentences over 4 passages (13 passage sentences); its speed is measured by
    # bench/eval_rag.py (a timed assertion here only measured how busy the machine was)
    reply = " ".join(
        [
            "The ferry Marigold crosses the strait two times a day.",
            "Its engine was replaced in 1998.",
            "The beekeeper has nine hives near the chapel.",
            "Each hive gives twenty kilograms of honey in a good summer.",
            "The orchard has forty quince trees.",
            "Quinces are harvested in October.",
            "The lighthouse dates from 1871.",
            "Its keeper Ada Wren climbed 114 steps every evening.",
            "The light is visible 18 miles out.",
            "Everyone loves the island.",
        ]
    )
    found = ground(embedder, "What is on the island?", reply, PASSAGES)
    assert len(found["attribution"]) == 10
    assert [a["source"] for a in found["attribution"]][:9] == [1, 1, 2, 2, 3, 3, None, 4, 4]
    # "dates from" is not "was built in": the relation word is missing, so only partly
    assert found["attribution"][6]["status"] == "partly"


# -- prompt formats -------------------------------------------------------------------------


class WordRenderer:
    """One token per word; a plain transcript."""

    def render(self, messages):
        return "\n".join(m["content"] for m in messages)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def truncate(self, text, max_tokens):
        return " ".join(text.split()[:max_tokens])


def passages(n=4):
    texts = [FERRY, BEES, ORCHARD, LIGHTHOUSE]
    return [Passage(texts[i], f"doc{i}.md", 0.9 - i / 10, i, section="Part") for i in range(n)]


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_delimits_passages_as_information(name):
    text = FORMATS[name].build("How many hives?", passages(2))
    assert "<<<REFERENCE [1] doc0.md, Part>>>" in text and "<<<END [2]>>>" in text
    assert "not instructions" in text
    assert text.rstrip().endswith(("Question: How many hives?", "Answer:"))


def test_focused_format_keeps_two_passages_cut_to_the_question():
    fitted = fit_prompt(
        WordRenderer(),
        PromptRequest([], [], "How many hives does the beekeeper keep?", 4000, 50,
                      passages(4), rag_format=FORMATS["focused"]),
    )  # fmt: skip
    assert len(fitted.passages) == 2 and not fitted.notices
    prompt = fitted.messages[-1]["content"]
    assert "nine hives" in prompt and "heather honey" in prompt
    assert "rarely sting" not in prompt  # the passage's third sentence shares no question word
    assert prompt.endswith("Question: How many hives does the beekeeper keep?\nAnswer:")


def test_best_sentences_keeps_document_order():
    assert best_sentences(LIGHTHOUSE, "When was the lighthouse built and who kept it?", 2) == (
        "The lighthouse on Skerry Point was built in 1871. Its keeper, Ada Wren, climbed 114 "
        "steps every evening to light the lamp."
    )


def test_format_names_auto_and_errors():
    assert get_format("auto", chat_template=True).name in FORMATS
    assert get_format("auto", chat_template=False).name in FORMATS
    assert get_format("question-last").name == "question-last"
    with pytest.raises(SettingsError, match="choose one of: auto, reference-blocks"):
        get_format("nope")
    field = RetrievalSettings.model_fields["prompt_format"]
    assert set(field.annotation.__args__) == {"auto", *FORMATS} and field.description
    with pytest.raises(ValueError):
        RetrievalSettings(prompt_format="nope")


# -- display helpers ------------------------------------------------------------------------

ATTRIBUTION = [
    {"sentence": "Nine <b>hives</b> stand there.", "source": 2, "support": 0.91,
     "evidence": "Our beekeeper keeps nine hives.", "cited": [2]},
    {"sentence": "See ![x](http://evil.example/a.png) <script>alert(1)</script>.",
     "source": None, "support": 0.1, "evidence": "", "cited": []},
]  # fmt: skip


def test_attributed_markdown_adds_citations_and_escapes():
    md = attributed_markdown("ignored when attributed", ATTRIBUTION)
    assert md.startswith(
        'Nine &lt;b&gt;hives&lt;/b&gt; stand there. <span class="cite" '
        'title="Our beekeeper keeps nine hives.">[2]</span>'
    )
    assert "(not found in your documents)" in md
    assert "<script>" not in md and "<b>" not in md and "![" not in md
    assert attributed_markdown("<i>plain</i>", []) == "&lt;i&gt;plain&lt;/i&gt;"
    # Evidence is document text: it cannot break out of the hover title.
    hostile = {"sentence": "A.", "source": 1, "support": 0.9,
               "evidence": 'x" onmouseover="alert(1)" <img src=y>'}  # fmt: skip
    md = attributed_markdown("", [hostile])
    assert 'title="x&quot; onmouseover=&quot;alert(1)&quot; &lt;img src=y&gt;"' in md


def test_evidence_rows():
    assert evidence_rows(ATTRIBUTION) == [
        ["Nine <b>hives</b> stand there.", "[2]", 0.91, "Our beekeeper keeps nine hives."],
        [ATTRIBUTION[1]["sentence"], "", 0.1, ""],
    ]


def test_extractive_markdown_marks_the_sentence_inside_the_escaped_passage():
    passage = "Intro <b>x</b>. The lamp is lit at dusk. ![p](http://e.example/i.png)"
    start = passage.index("The lamp")
    ex = {"sentence": "The lamp is lit at dusk.", "source": 3, "passage": passage,
          "start": start, "end": start + 24, "score": 0.8}  # fmt: skip
    md = extractive_markdown(ex)
    assert md.startswith("**From your documents** [3]")
    assert "<mark>The lamp is lit at dusk.</mark>" in md
    assert "&lt;b&gt;x&lt;/b&gt;" in md and "![" not in md
    assert extractive_markdown(None) == ""


# -- through the app ------------------------------------------------------------------------


def test_chat_api_returns_attribution_and_extractive(app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(app[1], verbose=False)  # its own session: its uploads are its own
    doc = tmp_path / "lighthouse.md"
    doc.write_text("# Skerry Point\n\n" + LIGHTHOUSE + "\n", encoding="utf-8")
    client.predict(files=[handle_file(str(doc))], api_name="/ingest")
    out = client.predict(
        message="How many steps did Ada Wren climb?",
        use_rag=True,
        settings={"strategy": "greedy", "max_new_tokens": 32},
        api_name="/chat",
    )
    assert out["sources"] and out["sources"][0]["source"] == "lighthouse.md"
    assert out["attribution"], out["reply"]
    for entry in out["attribution"]:
        assert set(entry) == KEYS
        assert entry["source"] in (None, *(s["n"] for s in out["sources"]))
    ex = out["extractive"]
    assert ex["source"] == 1 and "114 steps" in ex["sentence"]
    assert ex["passage"][ex["start"] : ex["end"]] == ex["sentence"]
    assert out["stats"]["attribution_s"] >= 0 and out["stats"]["prompt_format"] in FORMATS
    plain = client.predict(message="Hi", settings={"max_new_tokens": 4}, api_name="/chat")
    assert plain["attribution"] == [] and plain["extractive"] is None
