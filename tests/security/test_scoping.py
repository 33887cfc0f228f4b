"""Nobody reads, changes or deletes what is not theirs: documents, personas, sessions.

Rows 1, 6 and 9 of the issue on scoping; each drives a real running app.
"""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.helpers.servers import session_collections
from tests.security.conftest import dependency, login, queue_call

SECRET = "The vault code of Bellamy Station is 4417."


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return handle_file(str(path))


def test_visitors_only_ever_see_their_own_uploads(public_app, tmp_path):
    owner, stranger = Client(public_app.url, verbose=False), Client(public_app.url, verbose=False)
    added = owner.predict(files=[write(tmp_path, "vault.txt", SECRET)], api_name="/ingest")
    assert added[0]["status"] == "added" and added[0]["collection"] == "mine"
    mine = owner.predict(api_name="/documents")
    assert [d["source"] for d in mine] == ["vault.txt"]
    # No internal name reaches the caller: "mine" or "shared", never a session id.
    assert {d["collection"] for d in mine} == {"mine"}
    assert stranger.predict(api_name="/documents") == []
    hits = stranger.predict(query="vault code of Bellamy Station", k=4, api_name="/retrieve")
    assert all("4417" not in h["text"] for h in hits)
    # The old way in: naming a collection. The parameter no longer exists.
    with pytest.raises((AppError, TypeError, ValueError)):
        stranger.predict(query="vault", k=4, collection="shared", api_name="/retrieve")
    # Nor can the stranger delete the owner's document by its hash.
    with pytest.raises(AppError):
        stranger.predict(doc_hash=mine[0]["doc_hash"], api_name="/delete_document")
    assert [d["source"] for d in owner.predict(api_name="/documents")] == ["vault.txt"]


def test_the_shared_base_is_read_only_to_visitors(public_app, tmp_path):
    visitor = Client(public_app.url, verbose=False)
    with pytest.raises(AppError, match="Only admins"):
        visitor.predict(
            files=[write(tmp_path, "x.txt", "Shared notes.")], shared=True, api_name="/ingest"
        )
    with pytest.raises(AppError, match="Only admins"):
        visitor.predict(doc_hash="0" * 64, shared=True, api_name="/delete_document")


def test_only_admins_write_the_shared_base_when_logins_are_on(auth_app, tmp_path):
    alice = Client(auth_app.url, auth=("alice", "alice-password-1"), verbose=False)
    bob = Client(auth_app.url, auth=("bob", "bob-password-22"), verbose=False)
    doc = write(tmp_path, "handbook.md", "# Handbook\n\nThe office opens at nine.")
    out = alice.predict(files=[doc], shared=True, api_name="/ingest")
    assert out[0]["status"] == "added" and out[0]["collection"] == "shared"
    rows = bob.predict(api_name="/documents")
    shared = [r for r in rows if r["collection"] == "shared"]
    assert [r["source"] for r in shared] == ["handbook.md"] and not shared[0]["can_delete"]
    with pytest.raises(AppError, match="Only admins"):
        bob.predict(doc_hash=shared[0]["doc_hash"], shared=True, api_name="/delete_document")
    with pytest.raises(AppError, match="Only admins"):
        bob.predict(files=[doc], shared=True, api_name="/ingest")
    assert alice.predict(doc_hash=shared[0]["doc_hash"], shared=True, api_name="/delete_document")


def test_hidden_handlers_called_from_a_script_touch_only_the_caller(public_app):
    """The persona editor's events, called through the queue as any script can."""
    save = dependency(public_app.url, trigger="persona-save")
    delete = dependency(public_app.url, trigger="persona-delete")
    card = "name: Mallory\nsystem_prompt: I am the visitor's card.\n"
    out = queue_call(public_app.url, save, [card, {}], "visitor-one-session")
    assert out["success"], out
    own_cards = out["output"]["data"][0]  # the caller's browser state, sent back to the caller
    assert list(own_cards) == ["mine-mallory"]
    # Nothing was written for everyone: the shared list and the shared folder are unchanged.
    ids = {p["id"] for p in Client(public_app.url, verbose=False).predict(api_name="/personas")}
    assert "mine-mallory" not in ids and "mallory" not in ids
    assert not list((public_app.data_dir / "personas").glob("*.yaml"))
    # A second visitor cannot delete the first one's card: it is not in their state
    # (their picker does not even offer it)...
    out = queue_call(public_app.url, delete, ["mine-mallory", {}], "visitor-two-session")
    assert not out["success"] and "mine-mallory" in str(out["output"])
    # ...and no visitor deletes a shipped card.
    out = queue_call(public_app.url, delete, ["assistant", {}], "visitor-two-session")
    assert not out["success"] and "shipped" in str(out["output"])


def test_a_session_belongs_to_the_login_that_opened_it(auth_app):
    """Bob cannot act in Alice's session even when he learns its session hash."""
    save = dependency(auth_app.url, http=login(auth_app, "alice"), trigger="persona-save")
    session = "alice-tab-session-hash"
    card = "name: Alice card\n"
    first = queue_call(auth_app.url, save, [card, {}], session, http=login(auth_app, "alice"))
    assert first["success"], first
    hijack = queue_call(auth_app.url, save, [card, {}], session, http=login(auth_app, "bob"))
    # Bob may not even read that session's result stream; the handler refused him as well.
    assert hijack.get("status") == 403 and "another login" in hijack["detail"]
    auth_app.wait_for("refused: This session belongs to another login")


def test_session_collections_of_api_callers_expire(public_app, tmp_path):
    """A burst of anonymous callers, each with its own collection: all gone after the TTL."""
    from retrieval.store import check_collection_name  # noqa: F401 (the names it checks)

    for i in range(4):
        Client(public_app.url, verbose=False).predict(
            files=[write(tmp_path, f"burst{i}.txt", f"Burst document number {i}.")],
            api_name="/ingest",
        )
    # --session-ttl-minutes 0.05: three seconds idle, no browser tab open.
    deadline = time.time() + 30
    while time.time() < deadline:
        if not session_collections(public_app):
            break
        time.sleep(1)
    assert session_collections(public_app) == []


def test_raw_rest_calls_get_the_same_checks(public_app):
    http = httpx.Client(base_url=public_app.url, timeout=60)
    r = http.post("/gradio_api/call/delete_document", json={"data": ["0" * 64, True]})
    event = r.json()["event_id"]
    text = http.get(f"/gradio_api/call/delete_document/{event}").text
    assert "event: error" in text and "Only admins" in text
