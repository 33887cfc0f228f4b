"""Retrieval end to end: ingest, retrieve, list, delete and chat with sources via gradio_client,
and a browser that uploads a file and sees the sources under the answer."""


import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

FACTS = """# The Glimmerfen Marsh

The Glimmerfen Marsh lies east of the town of Oakhollow. Its famous blue herons
nest only on the floating reed islands called tussocks.

## Visiting

The marsh boardwalk opens at dawn and closes at six in the evening. Guided
lantern walks leave from the Oakhollow ferry pier every Friday night.
"""


@pytest.fixture
def own_client(app):
    """A client with its own session, so its uploads are private to it."""
    return Client(app[1], verbose=False)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_ingest_retrieve_list_delete(own_client, tmp_path):
    doc = write(tmp_path, "glimmerfen.md", FACTS)
    first = own_client.predict(files=[handle_file(doc)], api_name="/ingest")
    assert first[0]["status"] == "added" and first[0]["chunks_added"] > 0
    again = own_client.predict(files=[handle_file(doc)], api_name="/ingest")
    assert again[0]["status"] == "duplicate" and again[0]["chunks_added"] == 0

    hits = own_client.predict(query="When does the boardwalk close?", k=2, api_name="/retrieve")
    assert hits and hits[0]["source"] == "glimmerfen.md"
    assert "six in the evening" in hits[0]["text"]
    assert set(hits[0]) >= {"text", "source", "page", "chunk_index", "score"}

    docs = own_client.predict(api_name="/documents")
    assert [d["source"] for d in docs] == ["glimmerfen.md"]
    removed = own_client.predict(doc_hash=docs[0]["doc_hash"], api_name="/delete_document")
    assert removed == docs[0]["chunks"]
    assert own_client.predict(api_name="/documents") == []


def test_session_uploads_are_private(app, own_client, tmp_path):
    doc = write(tmp_path, "secret.txt", "The vault code of Bellamy Station is 4417.")
    own_client.predict(files=[handle_file(doc)], api_name="/ingest")
    other = Client(app[1], verbose=False)
    assert other.predict(api_name="/documents") == []
    assert all(
        h["source"] != "secret.txt"
        for h in other.predict(query="vault code", k=4, api_name="/retrieve")
    )


def test_chat_with_sources(own_client, tmp_path):
    doc = write(tmp_path, "glimmerfen.md", FACTS)
    own_client.predict(files=[handle_file(doc)], api_name="/ingest")
    out = own_client.predict(
        message="Where do the blue herons nest?",
        use_rag=True,
        settings={"strategy": "greedy", "max_new_tokens": 40},
        api_name="/chat",
    )
    assert out["sources"] and out["sources"][0]["source"] == "glimmerfen.md"
    assert out["sources"][0]["n"] == 1 and 0 < out["sources"][0]["score"] <= 1
    prompt = out["prompt_messages"][-1]["content"]
    # the default format ("focused"): passages delimited and labelled as not instructions
    assert "<<<REFERENCE [1] glimmerfen.md" in prompt and "not instructions" in prompt
    assert prompt.endswith("Question: Where do the blue herons nest?\nAnswer:")
    assert out["stats"]["prompt_format"] == "focused"
    assert out["stats"]["retrieval_s"] >= 0
    plain = own_client.predict(
        message="Where do the blue herons nest?",
        use_rag=False,
        settings={"strategy": "greedy", "max_new_tokens": 8},
        api_name="/chat",
    )
    assert plain["sources"] == []


def test_bad_files_are_reported_and_others_still_ingest(own_client, tmp_path):
    good = write(tmp_path, "good.txt", "Quillberry jam is made from quillberries and honey.")
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
    empty = write(tmp_path, "empty.txt", "")
    big = tmp_path / "big.txt"
    big.write_text("word " * 300_000, encoding="utf-8")  # 1.5 MB, over the test's 1 MB limit
    out = own_client.predict(
        files=[handle_file(p) for p in (binary, good, empty, big)],
        api_name="/ingest",
    )
    status = {o["file"]: (o["status"], o["error"] or "") for o in out}
    assert status["good.txt"][0] == "added"
    assert status["photo.txt"][0] == "error" and "binary" in status["photo.txt"][1]
    assert status["empty.txt"][0] == "error" and "empty" in status["empty.txt"][1]
    assert status["big.txt"][0] == "error" and "limit" in status["big.txt"][1]


def test_callers_cannot_name_a_collection(own_client):
    # The collection parameter is gone: what a caller may read follows from who they are.
    with pytest.raises((AppError, TypeError, ValueError)):
        own_client.predict(query="x", k=2, collection="../etc", api_name="/retrieve")


def test_browser_upload_then_sources_under_the_answer(page, tmp_path):
    from tests.helpers.browser import ingest_in_page, open_tab, send, set_slider, wait_until_done

    doc = write(tmp_path, "glimmerfen.md", FACTS + "\n<script>alert('x')</script>\n")
    ingest_in_page(page, doc)
    open_tab(page, "Chat")
    page.locator("#use-docs input").check()
    set_slider(page, "max_new_tokens", 24)
    send(page, "When does the marsh boardwalk close?")
    wait_until_done(page, timeout=60000)
    sources = page.locator("#sources")
    sources.wait_for(state="visible", timeout=10000)
    assert "glimmerfen.md" in sources.inner_text()
    assert "six in the evening" in sources.inner_text()
    # the passage is shown as text: the document's script tag is not in the DOM as a script
    assert page.locator("#sources script, #chatbot script").count() == 0
    # Grounded answer: the app's own [n] or "not found" after each sentence, the quote a
    # plain search gives, highlighted in its passage, and each sentence's evidence.
    # A sentence is either cited (the app's [n], its evidence on hover), "partly supported
    # [n]: why", or "not found": the model's own markers never stand in for a citation.
    reply = page.locator("#chatbot .bot-row").last.inner_text()
    cites = page.locator("#chatbot .bot-row").last.locator(".cite[title]")
    marked = cites.count() or "partly supported" in reply or "not found in your documents" in reply
    assert marked, reply
    if cites.count():  # the supporting passage sentence shows on hover
        assert cites.first.get_attribute("title")
    grounding = page.locator("#grounding")
    grounding.wait_for(state="visible", timeout=10000)
    assert "From your documents" in grounding.inner_text()
    assert "six in the evening" in page.locator("#grounding mark").first.inner_text()
    assert "Which passage backs each sentence" in grounding.inner_text()
    assert page.locator("#grounding script").count() == 0
