"""The UI's one error boundary (``ui.errors.boundary``): what Gradio sees of a handler stays
the same, and a domain error reaches the user as one ``gr.Error`` sentence."""

from __future__ import annotations

import inspect

import gradio as gr
import pytest
from gradio import helpers, utils

from chat.errors import Cancelled, InputError
from ui.errors import boundary


class Panel:
    @boundary
    def plain(self, text: str, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """A plain handler."""
        if not text:
            raise InputError("text is empty: type something.")
        return text.upper()

    @boundary
    def streaming(self, text, request: gr.Request = None):
        """A streaming handler."""
        yield text
        if text == "stop":
            raise Cancelled("stopped")
        raise InputError("history[0].role must be 'user' or 'assistant'")


def test_gradio_sees_the_same_handler():
    panel = Panel()
    for handler, original in ((panel.plain, Panel.plain.__wrapped__),
                              (panel.streaming, Panel.streaming.__wrapped__)):  # fmt: skip
        assert handler.__name__ == original.__name__ and handler.__doc__ == original.__doc__
        assert (
            list(inspect.signature(handler).parameters)
            == list(inspect.signature(original).parameters)[1:]
        )  # without self
        assert utils.get_type_hints(handler)["request"] is gr.Request
    assert inspect.isgeneratorfunction(panel.streaming)
    assert not inspect.isgeneratorfunction(panel.plain)
    inputs, progress_at, _, _ = helpers.special_args(panel.plain, ["hi"], request=None)
    assert progress_at == 2 and inputs[1] is None  # the request goes where it is declared


def test_a_domain_error_becomes_one_gr_error():
    with pytest.raises(gr.Error, match="text is empty: type something.") as err:
        Panel().plain("", None)
    assert err.value.__cause__ is None and err.value.print_exception is False
    assert Panel().plain("hi", None) == "HI"


def test_a_stream_shows_its_error_and_ends_quietly_when_cancelled():
    stream = Panel().streaming("go")
    assert next(stream) == "go"
    with pytest.raises(gr.Error, match=r"history\[0\]\.role"):
        next(stream)
    assert list(Panel().streaming("stop")) == ["stop"]  # Stop: the stream just ends
