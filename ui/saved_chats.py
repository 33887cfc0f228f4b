"""Saved chats in the sidebar: kept in the visitor's own browser, never on the server.

Chats live in a ``gr.BrowserState`` (the browser's localStorage, encrypted
with a key every visitor's page is sent, so not a signature: the visitor can
change them), so a reload or a new tab brings them back; they never reach
another visitor's browser. A saved chat the server gets back is untrusted
input, checked like any other. Every finished turn saves the current chat; the panel lists, opens,
renames and deletes chats, exports one or all as JSON, imports JSON, and turns
them into training data (``studio.datasets``: SFT and preference JSONL).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import gradio as gr

from chat.errors import ChatStudioError
from chat.text import load_json
from studio import conversations as conv
from studio import datasets
from studio.uploads import remove_upload
from ui.downloads import SAVE_JS, Download
from ui.errors import boundary, user_error

CHATS_KEY = "chat-studio-chats"
MAX_IMPORT_BYTES = 5 * 2**20


def new_id() -> str:
    """A fresh chat id."""
    return uuid.uuid4().hex[:12]


def label(chat: dict) -> str:
    """``title · 30 Nov 10:02 · persona · model``: seven chats with one question differ."""
    parts = [conv.title_of(chat)]
    if isinstance(chat.get("updated"), (int, float)):
        parts.append(time.strftime("%d %b %H:%M", time.localtime(chat["updated"])))
    parts += [str(chat[k])[:40] for k in ("persona", "model") if chat.get(k)]
    return " · ".join(parts)


def matches(chat: dict, query: str) -> bool:
    """Whether the chat's label or any of its messages contains ``query`` (any case)."""
    q = query.strip().lower()
    if not q:
        return True
    texts = [label(chat)] + [str(m.get("content", "")) for m in chat.get("messages") or []]
    return any(q in t.lower() for t in texts)


def choices(chats: list[dict], query: str = "") -> list[tuple[str, str]]:
    """Radio choices ``(label, id)``, newest first; only those matching ``query``."""
    return [
        (label(c), c["id"])
        for c in chats or []
        if isinstance(c, dict) and "id" in c and matches(c, query or "")
    ]


def model_of(conversation: list[dict]) -> str | None:
    """The model that wrote the newest reply (None before any)."""
    for m in reversed(conversation or []):
        stats = (m.get("meta") or {}).get("stats") or {}
        if stats.get("model"):
            return stats["model"]
    return None


def worth_saving(messages: list[dict]) -> bool:
    """Only chats where the user said something (a greeting alone is not a chat)."""
    return any(m.get("role") == "user" for m in messages or [])


class SavedChats:
    """The sidebar panel; ``chats`` is the browser's list, ``current`` this tab's chat id."""

    def __init__(self, browser_secret: str | None):
        self.chats = gr.BrowserState([], storage_key=CHATS_KEY, secret=browser_secret)
        self.current = gr.State(new_id)
        self.armed = gr.State(None)  # the chat whose Delete was clicked once
        with gr.Accordion("Saved chats", open=True, elem_id="saved-chats-box"):
            self.search = gr.Textbox(
                placeholder="Search saved chats", show_label=False, elem_id="chat-search"
            )
            self.pick = gr.Radio([], label="Saved chats", show_label=False, elem_id="saved-chats")
            with gr.Row():
                self.title = gr.Textbox(
                    placeholder="New title", show_label=False, scale=3, elem_id="chat-title"
                )
                self.rename_btn = gr.Button(
                    "Rename", size="sm", scale=1, min_width=60, elem_id="chat-rename"
                )
            with gr.Row():
                self.delete_btn = gr.Button(
                    "Delete", size="sm", min_width=60, elem_id="chat-delete"
                )
                self.export_all = gr.Button(
                    "Export all", size="sm", min_width=60, elem_id="chats-export"
                )
                self.importer = gr.UploadButton(
                    "Import", file_types=[".json"], size="sm", min_width=60, elem_id="chats-import"
                )
            gr.Markdown(
                "**Training data** from your chats: liked and kept replies (SFT), and "
                "liked / picked against disliked / regenerated ones (preference pairs)."
            )
            with gr.Row():
                self.sft_btn = gr.Button("SFT JSONL", size="sm", min_width=60, elem_id="export-sft")
                self.pref_btn = gr.Button(
                    "Preference JSONL", size="sm", min_width=60, elem_id="export-pref"
                )
            self.data_summary = gr.Markdown(elem_id="dataset-summary")
        self.download = Download()

    # ----- handlers ---------------------------------------------------------------------
    @staticmethod
    def save(chats, chat_id, conversation, persona_id):
        """Keep the current chat (newest first); returns the list and the picker."""
        if not worth_saving(conversation):
            return chats, gr.update(choices=choices(chats))
        chats = conv.save_chat(chats, chat_id, conversation, persona_id, model_of(conversation))
        return chats, gr.update(choices=choices(chats), value=chat_id)

    @staticmethod
    def restore(chats):
        """On page load: the newest saved chat, if any (else the page's fresh chat stays)."""
        chats = [c for c in chats or [] if isinstance(c, dict) and c.get("id")]
        if not chats:
            return gr.update(), gr.update(), gr.update(choices=[]), gr.update()
        last = chats[0]
        return (
            last.get("messages") or [],
            last["id"],
            gr.update(choices=choices(chats), value=last["id"]),
            last.get("persona") or gr.update(),
        )

    @staticmethod
    def open(chat_id, chats):
        """Open a saved chat: its messages, id and persona."""
        found = next((c for c in chats or [] if c.get("id") == chat_id), None)
        if found is None:
            raise user_error("That chat is no longer saved in this browser.")
        return found.get("messages") or [], chat_id, found.get("persona") or gr.update()

    @staticmethod
    def rename(chat_id, title, chats):
        """Give the selected chat a title."""
        title = (title or "").strip()[:120]
        if not title:
            raise user_error("Type a title first.")
        found = next((c for c in chats or [] if c.get("id") == chat_id), None)
        if found is None:
            raise user_error("Select a saved chat to rename (send a message to save this one).")
        found["title"] = title
        return chats, gr.update(choices=choices(chats), value=chat_id), ""

    @staticmethod
    def delete(chat_id, chats, current, armed):
        """Delete the selected chat at the second click (the first asks to confirm);
        deleting the open one starts a fresh chat id."""
        if not chat_id:
            raise user_error("Select a saved chat to delete.")
        if armed != chat_id:
            ask = gr.update(value="Click again to delete", variant="stop")
            return chats, gr.update(), current, chat_id, ask
        kept = [c for c in chats or [] if c.get("id") != chat_id]
        fresh = new_id() if chat_id == current else current
        done = gr.update(value="Delete", variant="secondary")
        return kept, gr.update(choices=choices(kept), value=None), fresh, None, done

    @staticmethod
    def export_chats(chats):
        """All saved chats as one JSON file."""
        if not chats:
            raise user_error("No saved chats yet: send a message first.")
        return json.dumps(chats, ensure_ascii=False, indent=2), "chats.json"

    @staticmethod
    @boundary
    def import_chats(file, chats):
        """Add the chats of a JSON file (a chat export, a list of them, or ``chats.json``)."""
        path = Path(file if isinstance(file, str) else file.name)
        try:
            if os.path.getsize(path) > MAX_IMPORT_BYTES:
                raise ChatStudioError(f"Chat files are limited to {MAX_IMPORT_BYTES // 2**20} MB.")
            try:
                raw = load_json(path.read_text(encoding="utf-8"), path.name)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ChatStudioError(f"{path.name} is not a JSON chat file: {exc}") from None
            items = raw if isinstance(raw, list) else [raw]
            messages = datasets.conversations_from(items)
        finally:
            remove_upload(path)
        records = []
        now = time.time()
        for k, (item, msgs) in enumerate(zip(items, messages, strict=True)):
            record = conv.new_chat_record(
                item.get("persona", "assistant") if isinstance(item, dict) else "assistant", msgs
            )
            record["updated"] = now - k * 1e-3  # the file's order, first on top
            if isinstance(item, dict):
                if isinstance(item.get("title"), str):
                    record["title"] = item["title"][:120]
                if isinstance(item.get("updated"), (int, float)):
                    record["updated"] = float(item["updated"])
                model = item.get("model")
                model = model.get("model") if isinstance(model, dict) else model
                if isinstance(model, str):
                    record["model"] = model[:200]
            records.append(record)
        chats = (records + list(chats or []))[: conv.MAX_CHATS]
        gr.Info(f"Imported {len(messages)} chat(s).")
        return chats, gr.update(choices=choices(chats))

    @staticmethod
    @boundary
    def dataset(kind, chats):
        """Training rows from the saved chats, as JSONL, with what was dropped."""
        if not chats:
            raise user_error("No saved chats yet: chat, like or dislike replies, then export.")
        data = datasets.export(kind, chats)
        name = "sft.jsonl" if kind == "sft" else "preference.jsonl"
        return data.jsonl(), name, f"`{name}`: {data.summary()}"

    # ----- wiring -------------------------------------------------------------------------
    def wire(self, c) -> None:
        """Connect to the chat tab ``c`` (its conversation, persona and change events)."""
        hidden = {"api_visibility": "private"}
        keep = [self.chats, self.current, c.conversation, c.persona]
        for event in c.changed():
            event.then(self.save, keep, [self.chats, self.pick], **hidden)
        c.turn_done(self.save, keep, [self.chats, self.pick])
        for event in c.started():
            event.then(new_id, None, self.current, **hidden).then(
                lambda: gr.update(value=None), None, self.pick, **hidden
            )
        opened = [c.conversation, self.current, c.persona]
        event = (
            self.pick.input(self.open, [self.pick, self.chats], opened, **hidden)
            .then(c.redraw, c.conversation, c.chatbot, **hidden)
            .then(c.after_open, None, c.reset_outputs, **hidden)
        )
        for fn, inputs, outputs in c.on_open:
            event.then(fn, inputs, outputs, **hidden)
        self.pick.input(lambda: (None, gr.update(value="Delete", variant="secondary")), None,
                        [self.armed, self.delete_btn], **hidden)  # fmt: skip
        self.search.change(lambda q, ch: gr.update(choices=choices(ch, q)),
                           [self.search, self.chats], self.pick, **hidden)  # fmt: skip
        self.rename_btn.click(
            self.rename, [self.pick, self.title, self.chats], [self.chats, self.pick, self.title],
            **hidden,
        )  # fmt: skip
        self.delete_btn.click(
            self.delete, [self.pick, self.chats, self.current, self.armed],
            [self.chats, self.pick, self.current, self.armed, self.delete_btn], **hidden,
        )  # fmt: skip
        self.download.wire(self.export_all.click, self.export_chats, self.chats, **hidden)
        self.importer.upload(
            self.import_chats, [self.importer, self.chats], [self.chats, self.pick], **hidden
        )
        for button, kind in ((self.sft_btn, "sft"), (self.pref_btn, "preference")):
            button.click(
                lambda ch, k=kind: self.dataset(k, ch),
                self.chats,
                [self.download.text, self.download.name, self.data_summary],
                **hidden,
            ).success(None, [self.download.text, self.download.name],
                      [self.download.text, self.download.name], js=SAVE_JS)  # fmt: skip

    def restore_on_load(self, demo, c) -> None:
        """The newest saved chat comes back when the page loads."""
        hidden = {"api_visibility": "private"}
        event = demo.load(
            self.restore, self.chats, [c.conversation, self.current, self.pick, c.persona],
            **hidden,
        ).then(c.redraw, c.conversation, c.chatbot, **hidden)  # fmt: skip
        for fn, inputs, outputs in c.on_open:
            event.then(fn, inputs, outputs, **hidden)
