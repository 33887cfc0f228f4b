"""Persona picker helpers and the card editor (view, edit, save, delete, import, export).

A visitor's own cards live in their browser (``own``: ``{id: yaml}``, a
``gr.BrowserState``); admins save to the shared folder instead. Every handler
works out the caller first, so calling one from a script changes only the
caller's own cards.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import gradio as gr

from chat.errors import ChatStudioError
from personas import PersonaStore
from personas.charcard import MAX_CARD_BYTES, card_to_v2, import_card
from personas.store import add_own, card_to_yaml, parse_card, remove_own, slugify
from studio.access import Access
from studio.uploads import remove_upload
from ui.downloads import Download
from ui.errors import boundary, user_error

MARKS = {"shipped": "", "shared": " (shared)", "mine": " (mine)"}
NEW_CARD = (
    "name: My persona\n"
    "description: One line for the picker.\n"
    "system_prompt: You are a helpful assistant.\n"
    "greeting: Hello {{user}}, how can I help?\n"
)


def where_saved(access: Access, folder) -> str:
    """What Save really does on this app, in one sentence."""
    if access.private and not access.logins:
        return (
            f"On this private app you are the admin: saving writes the card to the data folder "
            f"(`{folder}`), marked **(shared)**; it stays there until you delete it, and "
            "anyone using this app sees it."
        )
    if access.logins:
        return (
            "Admins' saved cards are written to the app's data folder, marked **(shared)**, "
            "for every user; anyone else's are kept in their own browser, marked **(mine)**, "
            "and nobody else sees them."
        )
    return (
        "Saving keeps the card in this browser only, marked **(mine)**: nobody else sees it, "
        "and clearing the browser's site data deletes it."
    )


def persona_choices(store: PersonaStore, own: dict | None = None) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, id)`` for the cards that loaded."""
    return [
        (f"{r['name']}{MARKS[r['source']]} — {r['description']}", r["id"])
        for r in store.list(own)
        if not r["error"]
    ]


def avatar_html(card) -> str:
    """The card's picture (an imported PNG card's), or nothing. The card checked that the
    avatar is a base64 image data URL, so it cannot carry markup."""
    if not getattr(card, "avatar", ""):
        return ""
    return (
        f'<img src="{card.avatar}" alt="{html.escape(card.name)}" '
        'style="width:96px;height:96px;object-fit:cover;border-radius:8px">'
    )


def broken_report(store: PersonaStore, own: dict | None = None) -> str:
    """One line per broken card, shown as plain text."""
    return "\n".join(f"{r['id']}: {r['error']}" for r in store.list(own) if r["error"])


class PersonaEditor:
    """The Personas tab; ``picker`` is the chat's persona dropdown, ``own`` the browser's cards.

    Save, import and delete change only the browser's cards (States); the
    picker follows in a step that runs on success. So a mistake (a bad card)
    is an error toast saying what to fix, and the picker never turns into an
    error badge; a script calling the event still sees it fail.
    """

    def __init__(self, store: PersonaStore, access: Access, picker: gr.Dropdown, own):
        self.store = store
        self.access = access
        self.picker = picker
        self.own = own
        with gr.Column(elem_id="persona-editor"):
            gr.Markdown(
                "Edit the card as YAML (`name`, `description`, `system_prompt`, `greeting`, "
                "`example_dialogue`, `examples` (prompts offered under the chat), "
                "`post_history_instructions`, `settings`, `tags`; macros `{{user}}`, `{{char}}`, "
                "`{{date}}`). Shipped personas stay as they are. "
                + where_saved(access, store.shared_dir or "personas")
            )
            with gr.Row():
                self.pick = gr.Dropdown(
                    persona_choices(store),
                    value=picker.value,
                    label="Persona to edit",
                    elem_id="persona-edit-pick",
                    scale=4,
                )
                self.new = gr.Button("New persona", elem_id="persona-new", scale=1)
            self.avatar = gr.HTML(avatar_html(store.get(picker.value)), elem_id="persona-avatar")
            self.text = gr.Code(
                value=card_to_yaml(store.get(picker.value)),
                language="yaml",
                label="Card",
                elem_id="persona-yaml",
                interactive=True,
                wrap_lines=True,  # a long system prompt stays in view on a phone
            )
            with gr.Row():
                self.save = gr.Button("Save persona", elem_id="persona-save")
                self.delete = gr.Button(
                    "Delete my persona", elem_id="persona-delete", visible=False
                )
                self.upload = gr.UploadButton(
                    "Import card (.json / .png)",
                    file_types=[".json", ".png"],
                    elem_id="persona-import",
                )
                self.export = gr.Button("Export V2 JSON", elem_id="persona-export")
            self.download = Download()
            self.just_saved = gr.State(None)  # the id of a card just saved or imported
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
        shown = [self.text, self.delete, self.avatar]
        # The editor edits the card picked here; it follows the chat's pick until changed.
        self.picker.change(lambda p: p, self.picker, self.pick, **hidden)
        self.pick.change(self.show, [self.pick, self.own], shown, **hidden)
        self.new.click(lambda: (NEW_CARD, gr.update(visible=False), "", None), None,
                       [*shown, self.pick], **hidden)  # fmt: skip
        kept = [self.own, self.just_saved]
        events = [
            self.save.click(self.save_card, [self.text, self.own], kept, **hidden),
            self.upload.upload(self.import_file, [self.upload, self.own], kept, **hidden),
            self.delete.click(self.delete_card, [self.pick, self.own], kept, **hidden),
        ]
        refresh = [self.picker, self.broken]
        # The chat starts afresh with a saved or imported card's greeting (see ChatUI).
        self.saved = [event.success(self.refresh, kept, refresh, **hidden) for event in events[:2]]
        events[2].success(self.refresh, kept, refresh, **hidden)
        for event in events:
            event.success(self.refresh_pick, kept, self.pick, **hidden)
        self.download.wire(self.export.click, self.export_card, [self.pick, self.own], **hidden)

    def refresh_pick(self, own: dict, select: str | None = None):
        """The editor's picker after a save, import or delete (the card just saved picked)."""
        choices = persona_choices(self.store, own)
        ids = [pid for _, pid in choices]
        if select in ids:
            return gr.update(choices=choices, value=select)
        return gr.update(choices=choices)

    def show(self, persona_id: str, own: dict):
        """The selected card as YAML, and Delete only for cards the caller may delete."""
        try:
            card = card_to_yaml(self.store.get(persona_id, own))
            source = self.store.source(persona_id, own)
        except ChatStudioError as exc:
            gr.Warning(str(exc))
            return gr.update(), gr.update(visible=False), ""
        avatar = avatar_html(self.store.get(persona_id, own))
        return card, gr.update(visible=source != "shipped"), avatar

    def refresh(self, own: dict, select: str | None = None):
        """Picker choices and the broken-cards report for this browser's cards."""
        report = broken_report(self.store, own)
        choices = persona_choices(self.store, own)
        ids = [pid for _, pid in choices]
        picker = (
            gr.update(choices=choices, value=select)
            if select in ids
            else gr.update(choices=choices)
        )
        return picker, gr.update(value=report, visible=bool(report))

    def _keep(self, card, own: dict, request: gr.Request):
        """Save ``card``: to the shared folder for admins, else into this browser."""
        caller = self.access.caller(request)
        if caller.admin:
            return self.store.save_shared(card), own
        own, pid = add_own(own, card)
        return pid, own

    @boundary
    def save_card(self, text: str, own: dict, request: gr.Request):
        """Validate the YAML and save it as the caller's persona."""
        pid, own = self._keep(parse_card(text, "card"), own, request)
        gr.Info(f"Saved as persona {pid!r}.")
        return own, pid

    @boundary
    def delete_card(self, persona_id: str, own: dict, request: gr.Request):
        """Delete one of the caller's personas (admins: a shared one) and go back to the default."""
        caller = self.access.caller(request)
        source = self.store.source(persona_id, own)
        if source == "mine":
            own = remove_own(own, persona_id)
        elif source == "shared":
            self.access.require_admin(caller, "delete shared personas")
            self.store.delete_shared(persona_id)
        else:
            raise user_error(f"{persona_id!r} is a shipped persona and cannot be deleted.")
        gr.Info(f"Deleted {persona_id!r}.")
        return own, "assistant"

    @boundary
    def import_file(self, file, own: dict, request: gr.Request):
        """Import a character card V2 (JSON or PNG) as the caller's persona."""
        path = Path(file if isinstance(file, str) else file.name)
        try:
            if os.path.getsize(path) > MAX_CARD_BYTES:
                raise ChatStudioError(f"Card files are limited to {MAX_CARD_BYTES // 2**20} MB.")
            card = import_card(path.read_bytes(), path.name)
            pid, own = self._keep(card, own, request)
        finally:
            remove_upload(path)  # uploads are never kept
        gr.Info(f"Imported as persona {pid!r}.")
        return own, pid

    @boundary
    def export_card(self, persona_id: str, own: dict):
        """The selected card as character card V2 JSON, saved by the browser."""
        card = self.store.get(persona_id, own)
        text = json.dumps(card_to_v2(card), ensure_ascii=False, indent=2)
        return text, f"{slugify(card.name)}.json"
