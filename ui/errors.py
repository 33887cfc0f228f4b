"""The UI's one error boundary: domain errors become ``gr.Error`` here, and only here.

Every function Gradio calls (a page event's handler or a ``gr.api`` endpoint)
carries ``@boundary``; the handler itself lets ``ChatStudioError`` (whose
message already says how to fix the problem) propagate, and raises
``user_error("...")`` only for mistakes it finds itself. A new panel does the
same::

    class TrainPanel:
        @boundary
        def start(self, dataset, settings, request: gr.Request):
            caller = self.ui.caller(request)      # may raise ChatStudioError
            ...                                   # so may the service

        def wire(self):
            self.go.click(self.start, [...], [...])

``boundary`` keeps the handler's name, docstring, signature and type hints
(Gradio reads them to inject ``gr.Request``/``gr.Progress`` and to describe
the API), and a generator handler stays a generator (Gradio streams it).
A ``Cancelled`` a generator meets ends its stream quietly (Stop, or nobody
listening); a plain handler's shows as one sentence, as every other refusal.
"""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from chat.errors import Cancelled, ChatStudioError

log = logging.getLogger("chat_studio")


def user_error(exc: Exception | str) -> gr.Error:
    """A ``gr.Error`` for a mistake the user can fix; logged as one line."""
    message = str(exc)
    log.info("refused: %s", message.splitlines()[0] if message else type(exc).__name__)
    return gr.Error(message, print_exception=False)


def boundary(fn):
    """``fn`` with every ``ChatStudioError`` it raises shown to the user as ``gr.Error``."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Cancelled:
                return
            except ChatStudioError as exc:
                raise user_error(exc) from None

        return streaming

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ChatStudioError as exc:
            raise user_error(exc) from None

    return handler


def typed_token_id(value) -> int:
    """A token id picked from a list or typed (as text); the model checks its range."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise user_error("Pick a token from the list, or type a token id (a whole number).")
    return value
