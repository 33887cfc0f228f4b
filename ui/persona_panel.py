"""Persona picker helpers and the card editor (view, edit, save as, delete, import, export)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import gradio as gr

from chat.errors import ChatStudioError
from personas import PersonaStore
from personas.charcard import MAX_CARD_BYTES, card_to_v2, import_card
from personas.store import card_to_yaml, parse_card, slugify


def persona_choices(store: PersonaStore) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, id)`` for the cards that loaded."""
    mark = {"user": " (mine)", "shipped": ""}
    return [
        (f"{r['name']}{mark[r['source']]} — {r['description']}", r["id"])
        for r in store.list()
        if not r["error"]
    ]


def broken_report(store: PersonaStore) -> str:
    """One line per broken card file, shown as plain text."""
    return "\n".join(f"{r['id']}: {r['error']}" for r in store.list() if r["error"])


class PersonaEditor:
    """The editor accordion; ``picker`` is the persona dropdown it works with."""

    def __init__(self, store: PersonaStore, picker: gr.Dropdown):
        self.store = store
        self.picker = picker
        with gr.Accordion("Persona editor", open=False):
            gr.Markdown(
                "Edit the card as YAML (`name`, `description`, `system_prompt`, `greeting`, "
                "`example_dialogue`, `settings`, `tags`; macros `{{user}}`, `{{char}}`, "
                "`{{date}}`). Saving makes it one of *your* personas; shipped ones stay as "
                "they are."
            )
            self.text = gr.Code(
                value=card_to_yaml(store.get(picker.value)),
                language="yaml",
                label="Card",
                elem_id="persona-yaml",
                interactive=True,
            )
            with gr.Row():
                self.save = gr.Button("Save as my persona", elem_id="persona-save")
                self.delete = gr.Button("Delete my persona", elem_id="persona-delete")
                self.upload = gr.UploadButton(
                    "Import card (.json / .png)",
                    file_types=[".json", ".png"],
                    elem_id="persona-import",
                )
                self.export = gr.Button("Export V2 JSON", elem_id="persona-export")
            self.export_file = gr.File(label="Character card", visible=False)
            self.broken = gr.Textbox(
                value=broken_report(store),
                label="Cards that failed to load",
                visible=bool(broken_report(store)),
                interactive=False,
                lines=2,
            )

    def wire(self) -> None:
        """Connect the buttons (call inside the Blocks)."""
        hidden = {"api_visibility": "private"}
        self.picker.change(self.show, self.picker, self.text, **hidden)
        refresh = [self.picker, self.broken]
        self.save.click(self.save_card, self.text, refresh, **hidden)
        self.delete.click(self.delete_card, self.picker, refresh, **hidden)
        self.upload.upload(self.import_file, self.upload, refresh, **hidden)
        self.export.click(self.export_card, self.picker, self.export_file, **hidden)

    def show(self, persona_id: str) -> str:
        """The selected card as YAML."""
        try:
            return card_to_yaml(self.store.get(persona_id))
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None

    def _refresh(self, select: str):
        report = broken_report(self.store)
        return (
            gr.update(choices=persona_choices(self.store), value=select),
            gr.update(value=report, visible=bool(report)),
        )

    def save_card(self, text: str):
        """Validate the YAML and save it as a user persona."""
        try:
            pid = self.store.save_user(parse_card(text, "card"))
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Saved as your persona {pid!r}.")
        return self._refresh(pid)

    def delete_card(self, persona_id: str):
        """Delete a user persona and go back to the default one."""
        try:
            self.store.delete_user(persona_id)
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Deleted {persona_id!r}.")
        return self._refresh("assistant")

    def import_file(self, file):
        """Import a character card V2 (JSON or PNG) as a user persona."""
        path = Path(file if isinstance(file, str) else file.name)
        if os.path.getsize(path) > MAX_CARD_BYTES:
            raise gr.Error(f"Card files are limited to {MAX_CARD_BYTES // 2**20} MB.")
        try:
            pid = self.store.save_user(import_card(path.read_bytes(), path.name))
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Imported as your persona {pid!r}.")
        return self._refresh(pid)

    def export_card(self, persona_id: str):
        """Write the selected card as character card V2 JSON for download."""
        try:
            card = self.store.get(persona_id)
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        path = Path(tempfile.mkdtemp(prefix="card-")) / f"{slugify(card.name)}.json"
        path.write_text(json.dumps(card_to_v2(card), ensure_ascii=False, indent=2), "utf-8")
        return gr.update(value=str(path), visible=True)
