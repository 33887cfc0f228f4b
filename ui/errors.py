"""User errors as the page and the API show them: one line in the log, no traceback."""

from __future__ import annotations

import logging

import gradio as gr

log = logging.getLogger("chat_studio")


def user_error(exc: Exception | str) -> gr.Error:
    """A ``gr.Error`` for a mistake the user can fix; logged as one line."""
    message = str(exc)
    log.info("refused: %s", message.splitlines()[0] if message else type(exc).__name__)
    return gr.Error(message, print_exception=False)


def typed_token_id(value) -> int:
    """A token id picked from a list or typed (as text); the model checks its range."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise user_error("Pick a token from the list, or type a token id (a whole number).")
    return value
