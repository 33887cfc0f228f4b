"""Personas end to end: /personas and /chat through gradio_client, and the page in Chromium."""

import json

import pytest

from personas import PersonaStore
from tests.helpers.browser import bot_text, open_tab
from tests.helpers.examples import V2

SHIPPED = ["assistant", "catgirl", "translator", "tutor", "sentiment", "storyteller"]
MESSAGES = {
    "assistant": "What is the capital of France?",
    "catgirl": "你好，你叫什么名字？",
    "translator": "英文: I love you",
    "tutor": "If a train travels 60 km in one hour, how far does it go in 3 hours?",
    "sentiment": "这部电影太精彩了！",
    "storyteller": "Write a short story about a cat who goes on an adventure.",
}


def test_personas_endpoint_lists_the_shipped_cards(client):
    rows = {r["id"]: r for r in client.predict(api_name="/personas")}
    assert set(SHIPPED) <= set(rows)
    assert rows["catgirl"] == {
        "id": "catgirl",
        "name": "猫娘",
        "source": "shipped",
        "error": None,
        "description": rows["catgirl"]["description"],
    }


@pytest.mark.parametrize("pid", SHIPPED)
def test_chat_with_each_shipped_persona(client, pid):
    card = PersonaStore().get(pid)
    out = client.predict(
        message=MESSAGES[pid],
        persona=pid,
        settings={"max_new_tokens": 24, "seed": 7},
        api_name="/chat",
    )
    sent = out["prompt_messages"]
    prefix = card.prefix_messages()
    assert sent[: len(prefix)] == prefix  # system prompt first, then the few-shot examples
    assert sent[0] == {"role": "system", "content": card.expand(card.system_prompt)}
    assert sent[-1] == {"role": "user", "content": MESSAGES[pid]}
    assert len(sent) == len(prefix) + 1
    assert out["reply"]


def test_persona_settings_apply(client):
    out = client.predict(message="这个产品质量很差。", persona="sentiment", api_name="/chat")
    assert out["settings"]["strategy"] == "greedy" and out["stats"]["completion_tokens"] <= 2
    assert out["reply"].strip()[:1] in {"A", "B", "C"}
    out = client.predict(message="英文: Good night", persona="translator", api_name="/chat")
    assert out["reply"].startswith("中文:") and "\n" not in out["reply"]


def test_catgirl_answers_in_chinese(client):
    out = client.predict(
        message="你好",
        persona="catgirl",
        settings={"strategy": "greedy", "max_new_tokens": 20},
        api_name="/chat",
    )
    assert any("\u4e00" <= ch <= "\u9fff" for ch in out["reply"])


def test_browser_persona_picker_shows_the_greeting(page, tmp_path):
    page.locator("#persona input").click()
    page.get_by_role("option", name="猫娘").first.click()
    page.wait_for_function(
        "document.querySelector('#chatbot').innerText.includes('主人好喵')", timeout=15000
    )
    assert "主人好喵" in bot_text(page)
    # The editor shows the card; an imported character card becomes one of "my" personas.
    open_tab(page, "Personas")
    page.wait_for_function(
        "document.querySelector('#persona-yaml') && "
        "document.querySelector('#persona-yaml').innerText.includes('你是一只可爱的猫娘')",
        timeout=15000,
    )
    card = tmp_path / "mira.json"
    card.write_text(json.dumps(V2), encoding="utf-8")
    with page.expect_file_chooser() as chooser:
        page.locator("#persona-import").click()
    chooser.value.set_files(str(card))
    open_tab(page, "Chat")
    page.wait_for_function(
        "document.querySelector('#chatbot').innerText.includes('Welcome aboard, User')",
        timeout=15000,
    )
    # On a private app you are the admin: your cards are the shared ones.
    assert "Captain Mira (shared)" in page.locator("#persona input").input_value()
