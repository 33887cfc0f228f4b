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
