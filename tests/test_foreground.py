"""The foreground signal: a chat is in it from its generation slot to its first token, counted
across concurrent chats, and its listeners hear one pause and one resume."""

from __future__ import annotations

import threading

import pytest

from chat.backends.standin import StandinBackend
from chat.engine import ChatEngine, TurnRequest
from chat.foreground import Foreground
from chat.settings import DecodingSettings

GREEDY = DecodingSettings(strategy="greedy", max_new_tokens=12, repetition_penalty=1.0)


class Watched(StandinBackend):
    """The stand-in, noting how many chats are in the foreground at each of its steps."""

    def __init__(self, foreground: Foreground, fail: bool = False):
        super().__init__()
        self.foreground, self.fail, self.seen = foreground, fail, []

    def generate(self, request, halt):
        self.seen.append(("prompt", self.foreground.active))
        if self.fail:
            raise RuntimeError("the model broke")
        for delta in super().generate(request, halt):
            yield delta
            self.seen.append(("after a delta", self.foreground.active))


def test_a_turn_is_in_the_foreground_until_its_first_token():
    fg, heard = Foreground(), []
    fg.listen(heard.append)
    backend = Watched(fg)
    *_, last = ChatEngine(backend, foreground=fg).stream_turn(TurnRequest("hi", [], [], GREEDY))
    assert last.reply == "echo: hi"
    assert backend.seen[0] == ("prompt", 1)
    assert len(backend.seen) > 2 and set(backend.seen[1:]) == {("after a delta", 0)}
    assert heard == [True, False] and fg.active == 0


def test_a_turn_that_fails_before_its_first_token_leaves_the_foreground():
    fg, heard = Foreground(), []
    fg.listen(heard.append)
    engine = ChatEngine(Watched(fg, fail=True), foreground=fg)
    with pytest.raises(RuntimeError, match="the model broke"):
        list(engine.stream_turn(TurnRequest("hi", [], [], GREEDY)))
    assert heard == [True, False] and fg.active == 0


def test_overlapping_chats_from_two_threads_pause_once_until_both_leave():
    fg, heard = Foreground(), []
    fg.listen(heard.append)
    a_in, b_in, a_out, b_done = (threading.Event() for _ in range(4))

    def chat_a():
        with fg.prompt():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def chat_b():
        a_in.wait(10)
        with fg.prompt():
            b_in.set()
            a_out.wait(10)
            assert fg.active == 1
            heard.append("a left")
        b_done.set()

    threads = [threading.Thread(target=chat_a), threading.Thread(target=chat_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b_done.is_set()
    assert heard == [True, "a left", False] and fg.active == 0


def test_a_late_listener_hears_the_chat_under_way_and_a_failing_one_fails_no_chat():
    fg, heard = Foreground(), []

    def broken(busy):
        raise OSError("cannot pause")

    fg.listen(broken)
    with fg.prompt():
        fg.listen(heard.append)
        assert heard == [True]
    assert heard == [True, False]
    fg.unlisten(heard.append)
    with fg.prompt():
        pass
    assert heard == [True, False]
    fg.leave()  # an unpaired leave changes nothing
    assert fg.active == 0
