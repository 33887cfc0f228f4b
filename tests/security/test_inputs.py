"""What a visitor sends is checked before it reaches native code, and mistakes get one sentence.

Rows 1, 11 and 12 of part three: a token id outside the vocabulary used to
abort the whole app (llama.cpp throws ``std::out_of_range``); malformed
arguments came back as Python's own messages; deep JSON in an imported card
or chat hit the recursion limit; a delete error named the caller's private
collection; the Model tab listed absolute server paths. Also: each start of
the ``--runtime subprocess`` worker left a folder in the temporary folder.
"""

from __future__ import annotations

import json
import time

import httpx
import psutil
import pytest
from gradio_client import Client

from tests.security.conftest import dependency, queue_call, start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]

GREEDY = {"strategy": "greedy", "max_new_tokens": 4}
N_VOCAB = 49152  # SmolLM2's vocabulary: ids 0..49151
INTERNALS = (
    "invalid literal",
    "Traceback",
    "pydantic",
    "validation error for",
    "recursion",
    "Original error",
    "not supported between",
)


def rest(app, name: str, **values) -> str:
    """Call ``/name`` with named values over Gradio's v2 REST route; the event stream's text."""
    r = httpx.post(app.url + f"gradio_api/call/v2/{name}", json=values, timeout=30)
    assert r.status_code == 200, r.text
    event = r.json()["event_id"]
    return httpx.get(app.url + f"gradio_api/call/v2/{name}/{event}", timeout=120).text


def refusal(text: str) -> str:
    """The error sentence of an event stream (asserts the call failed)."""
    assert "event: error" in text, text
    data = json.loads(text.split("event: error", 1)[1].split("data:", 1)[1].splitlines()[0])
    message = data.get("error") if isinstance(data, dict) else data
    assert isinstance(message, str) and message, text
    assert not any(bad in message for bad in INTERNALS), message
    return message


def alive(app) -> None:
    """The app still runs and still answers a chat turn."""
    assert app.proc.poll() is None, app.output()[-3000:]
    out = Client(app.url, verbose=False).predict(message="Hi", settings=GREEDY, api_name="/chat")
    assert out["reply"]


def worker_pids(app) -> list[int]:
    """The pids of the app's llama.cpp worker processes."""
    pids = []
    for p in psutil.Process(app.proc.pid).children(recursive=True):
        try:
            if "chat.backends.worker" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a killed worker not reaped yet is not a worker any more
    return pids


# -- row 1: token ids outside the vocabulary ------------------------------------------------


@pytest.mark.parametrize("ids", [[N_VOCAB], [987654321], [-1], [5, "x"]])
def test_an_unknown_token_id_is_refused_and_the_app_lives(public_app, ids):
    text = rest(public_app, "chat", message="hi", settings=GREEDY, reply_prefix_ids=ids)
    message = refusal(text)
    assert "reply_prefix_ids" in message
    if ids != [5, "x"]:
        assert "not a token of this model" in message and "49151" in message
    alive(public_app)


@pytest.fixture(scope="module")
def subprocess_app(tmp_path_factory):
    """An app whose model runs in a child, its temporary folder a fresh one of its own."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        app = start_app(tmp_path_factory.mktemp("sub"), "--runtime", "subprocess")
    app.tmp = tmp
    yield app
    app.stop()


def test_an_unknown_token_id_leaves_the_worker_and_other_turns_alone(subprocess_app):
    app = subprocess_app
    before = worker_pids(app)
    assert len(before) == 1
    client = Client(app.url, verbose=False)
    long_turn = client.submit(
        message="Tell me a long story about a lighthouse.",
        settings={"strategy": "greedy", "max_new_tokens": 120},
        api_name="/chat",
    )
    message = refusal(rest(app, "chat", message="hi", settings=GREEDY, reply_prefix_ids=[N_VOCAB]))
    assert "not a token of this model" in message
    assert long_turn.result(timeout=300)["reply"]  # the turn in flight was not failed
    assert worker_pids(app) == before  # the worker never died
    alive(app)


def test_the_worker_leaves_no_folder_in_the_temporary_folder(subprocess_app):
    app = subprocess_app
    assert not list(app.tmp.glob("chat-studio-worker-*"))
    (pid,) = worker_pids(app)
    psutil.Process(pid).kill()  # the app restarts it
    deadline = time.time() + 120
    while time.time() < deadline and worker_pids(app) in ([], [pid]):
        time.sleep(0.2)
    alive(app)  # answers with the new worker
    assert worker_pids(app) != [pid]
    assert not list(app.tmp.glob("chat-studio-worker-*"))


@pytest.mark.browser
def test_appending_an_unknown_token_in_the_explorer_is_refused(browser, public_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(public_app.url)
        page.wait_for_selector("#message textarea")
        page.get_by_role("tab", name="Inspect").click()
        page.get_by_text("Next-token explorer").click()
        page.locator("#nt-predict").click()
        page.wait_for_function(
            "document.querySelector('#nt-bars').innerText.includes('Paris')", timeout=60000
        )
        pick = page.locator("#nt-pick input")
        pick.fill("987654321")
        pick.press("Enter")
        page.locator("#nt-append").click()
        toast = page.locator(".toast-wrap")
        toast.get_by_text("not a token of this model").wait_for(timeout=30000)
        assert not any(bad in toast.inner_text() for bad in INTERNALS)
        assert page.locator("#nt-text textarea").input_value() == "The capital of France is"
    finally:
        context.close()
    alive(public_app)


# -- row 11: one sentence for every mistake -------------------------------------------------


def test_next_token_with_a_top_k_of_text(public_app):
    message = refusal(rest(public_app, "next_token", text="The capital of France is", top_k="abc"))
    assert message.startswith("top_k:") and "1 to 50" in message


def test_retrieve_with_k_of_text(public_app):
    message = refusal(rest(public_app, "retrieve", query="ferry", k="many"))
    assert message.startswith("k:") and "1 to 20" in message


def test_chat_with_arguments_of_the_wrong_kind(public_app):
    for values in (
        {"message": {"text": "hi"}},
        {"message": "hi", "use_rag": "perhaps"},
        {"message": "hi", "user_name": ["a"]},
        {"message": "hi", "top_logprobs": "all"},
    ):
        message = refusal(rest(public_app, "chat", settings=GREEDY, **values))
        assert message.split(":")[0] in values, message


@pytest.mark.parametrize(
    "values", [{"layer": "abc"}, {"layer": 99999}, {"head": "x"}, {"layer": 0, "head": -3}]
)
def test_attention_with_bad_numbers_on_llama_cpp(public_app, values):
    """Attention needs transformers (tests/test_inspect_e2e.py); here its reason comes first."""
    message = refusal(rest(public_app, "attention", text="The cat sat.", **values))
    assert "Not available on this backend" in message


def test_hidden_page_events_with_text_for_numbers(public_app):
    """The explorer's Predict, called by a script with text where the page sends a number."""
    fn = dependency(public_app.url, trigger="nt-predict")
    config = httpx.get(public_app.url + "config").json()
    dep = next(d for d in config["dependencies"] if d["id"] == fn)
    by_id = {c["id"]: c for c in config["components"]}
    data = []
    for cid in dep["inputs"]:
        props = by_id[cid].get("props", {})
        data.append(props.get("value"))
    k_at = next(i for i, cid in enumerate(dep["inputs"]) if by_id[cid]["props"].get("label")
                == "top k shown")  # fmt: skip
    data[k_at] = "abc"
    out = queue_call(public_app.url, fn, data, "hidden-numbers")
    assert not out["success"]
    # Gradio's slider refuses it before our code runs: on a shared app, no Python comes back.
    message = str(out["output"].get("error"))
    assert not any(bad in message for bad in INTERNALS), message
    alive(public_app)


def upload(app, name: str, body: bytes, http: httpx.Client) -> dict:
    r = http.post("/gradio_api/upload", files=[("files", (name, body))])
    assert r.status_code == 200, r.text
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_deeply_nested_card_and_chat_files(public_app):
    http = httpx.Client(base_url=public_app.url, timeout=120)
    deep = b"[" * 200_000
    card = upload(public_app, "deep.json", deep, http)
    out = queue_call(
        public_app.url, dependency(public_app.url, trigger="persona-import"), [card, {}], "deep1"
    )
    message = str(out["output"].get("error"))
    assert not out["success"] and "nested" in message, out
    assert not any(bad in message for bad in INTERNALS), message
    chats = upload(public_app, "chats.json", deep, http)
    out = queue_call(
        public_app.url, dependency(public_app.url, trigger="chats-import"), [chats, None], "deep2"
    )
    message = str(out["output"].get("error"))
    assert not out["success"] and "nested" in message, out
    assert not any(bad in message for bad in INTERNALS), message
    alive(public_app)


def test_a_delete_error_never_names_the_private_collection(public_app):
    message = refusal(rest(public_app, "delete_document", doc_hash="0" * 64))
    assert "No document" in message and "session-" not in message


# -- row 12: no server paths ----------------------------------------------------------------


def test_the_model_list_shows_no_server_path(public_app):
    from chat.models import default_model_path

    fn = dependency(public_app.url, trigger="model-refresh")
    out = queue_call(public_app.url, fn, [], "model-list")
    assert out["success"], out
    shown = json.dumps(out["output"]["data"])
    assert "bundled" in shown
    assert str(default_model_path().parent) not in shown and str(public_app.data_dir) not in shown
    model = Client(public_app.url, verbose=False).predict(api_name="/model")
    assert "/" not in model["model"]
