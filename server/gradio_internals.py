"""Every Gradio internal the server relies on, in one place, checked at start.

Gradio's public API does not say who a login cookie belongs to, which
session a queued event is for, how to drop an ended session's state, how a
session makes its component configs, where an upload's temporary files are
made, or how the exceptions it prints for a caller's malformed request read.
The server needs all of these; they are read or patched here and nowhere
else. They were written against Gradio ``SUPPORTED``.x: ``check`` refuses
any other version, and any such version that lacks one of them, with a
start-up error that names the versions supported, so a changed Gradio can
never silently mis-attribute sessions or skip a patch. Gradio is imported
inside the functions: ``GRADIO_TEMP_DIR`` must be set before it loads.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import textwrap
from collections.abc import Callable, Iterable
from copy import copy
from importlib import metadata

from chat.errors import ChatStudioError

SUPPORTED = "6.31"  # every 6.31.x; requirements.txt pins one
FIX = f"Install a supported one: pip install 'gradio=={SUPPORTED}.*' (requirements.txt pins it)."

# The lines Gradio prints for a caller's mistake (too few values for an event, a value a
# component cannot take, a ``gr.Error``); ``check`` finds each wording in Gradio's source.
USER_ERRORS = re.compile(
    r"^(gradio\.exceptions\.Error: |ValueError: An event handler \(\w+\) didn't receive"
    r"|gradio\.exceptions\.ComponentProcessingError: Could not preprocess input)"
)


class GradioUnsupported(ChatStudioError):
    """The installed Gradio is not one the server was written for."""


def check_version(version: str | None = None) -> None:
    """Raise ``GradioUnsupported`` unless ``version`` (default: the installed one) is supported."""
    version = version or metadata.version("gradio")
    if version.split(".")[:2] != SUPPORTED.split("."):
        raise GradioUnsupported(
            f"Gradio {version} is installed, but this app relies on Gradio internals written "
            f"for Gradio {SUPPORTED}.x only. {FIX}"
        )


def _lacks(what: str) -> GradioUnsupported:
    return GradioUnsupported(
        f"The installed Gradio {metadata.version('gradio')} lacks internals this app relies "
        f"on ({what}); it was written for Gradio {SUPPORTED}.x. {FIX}"
    )


def _require(what: str, present: Callable[[], bool]) -> None:
    """Raise ``GradioUnsupported`` naming ``what`` unless ``present()`` holds."""
    if not _holds(present):
        raise _lacks(what)


def check(blocks) -> None:
    """Refuse to start unless Gradio is supported and has every internal used here.

    ``blocks`` is the app's ``gr.Blocks`` after ``queue()`` (its queue and app exist).
    """
    check_version()
    missing = [what for what, present in _probes(blocks) if not _holds(present)]
    if missing:
        raise _lacks("; ".join(missing))


def _holds(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except (AttributeError, KeyError, TypeError, OSError, SyntaxError, StopIteration):
        return False  # missing, renamed or unreadable: the internal is not as written for


def _probes(blocks) -> list[tuple[str, Callable[[], bool]]]:
    """(what, whether it is as this module uses it) for every internal used here."""
    from gradio import blocks as gradio_blocks
    from gradio import exceptions, queueing, route_utils

    return [
        ("SessionState.__init__ sets the attributes mirrored here", _mirror_holds),
        (
            "BlocksConfig.config_for_block and .blocks",
            lambda: (
                callable(blocks.default_config.config_for_block)
                and isinstance(blocks.default_config.blocks, dict)
                and isinstance(blocks.blocks, dict)
            ),
        ),
        (
            "Blocks.state_holder.lock, .session_data and .time_last_used",
            lambda: all(
                hasattr(blocks.state_holder, a) for a in ("lock", "session_data", "time_last_used")
            ),
        ),
        (
            "Blocks._queue.event_ids_to_events, .pending_event_ids_session and "
            ".pending_messages_per_session",
            lambda: (
                isinstance(blocks._queue.event_ids_to_events, dict)
                and isinstance(blocks._queue.pending_event_ids_session, dict)
                and hasattr(blocks._queue.pending_messages_per_session, "pop")
            ),
        ),
        (
            "Blocks._queue.sleep_when_free and .progress_update_sleep_when_free",
            lambda: (
                isinstance(blocks._queue.sleep_when_free, float)
                and isinstance(blocks._queue.progress_update_sleep_when_free, float)
                and "self.sleep_when_free" in inspect.getsource(queueing.Queue.start_processing)
                and "self.progress_update_sleep_when_free"
                in inspect.getsource(queueing.Queue.start_progress_updates)
            ),
        ),
        (
            "queueing.Event.session_hash",
            lambda: "session_hash" in inspect.signature(queueing.Event).parameters,
        ),
        (
            "App.cookie_id, App.tokens and App.get_blocks",
            lambda: (
                isinstance(blocks.app.cookie_id, str)
                and isinstance(blocks.app.tokens, dict)
                and blocks.app.get_blocks() is blocks
            ),
        ),
        ("route_utils.NamedTemporaryFile", lambda: callable(route_utils.NamedTemporaryFile)),
        (
            "the wording of gradio.exceptions.Error and of the refusals of malformed input",
            lambda: (
                exceptions.Error.__module__ == "gradio.exceptions"
                and exceptions.ComponentProcessingError.__module__ == "gradio.exceptions"
                and "raise ValueError" in inspect.getsource(gradio_blocks.Blocks.validate_inputs)
                and "didn't receive enough input values"
                in inspect.getsource(gradio_blocks.Blocks.validate_inputs)
                and "Could not {stage} {kind} component"
                in inspect.getsource(gradio_blocks.Blocks._format_processing_error)
            ),
        ),
    ]


def _mirror_holds() -> bool:
    """Whether Gradio's own ``SessionState.__init__`` sets exactly what ``_mirrored_init`` sets."""
    from gradio import state_holder

    return _assigned(_method_of(state_holder.SessionState, "__init__")) == _assigned(
        _method_of_function(_mirrored_init)
    )


def _method_of(cls, name: str) -> ast.FunctionDef:
    """The method as the class's source file defines it (whatever has been patched since)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return next(
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name
    )


def _method_of_function(func) -> ast.FunctionDef:
    return ast.parse(inspect.getsource(func)).body[0]


def _assigned(func: ast.FunctionDef) -> set[str]:
    """The ``self.X`` attributes a method assigns."""
    return {
        target.attr
        for node in ast.walk(func)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


# -- sessions: their component configs, made lazily --------------------------------------


def _mirrored_init(self, blocks, make_configs) -> None:
    """``SessionState.__init__`` of Gradio 6.31, with ``config_values`` from ``make_configs``."""
    self.blocks_config = copy(blocks.default_config)
    self.config_values = make_configs(self, blocks)
    self.state_data = {}
    self._state_ttl = {}
    self.is_closed = False
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def defer_session_configs(make_configs: Callable[[object, object], dict]) -> None:
    """New sessions take their ``config_values`` from ``make_configs(session, blocks)``.

    Replaces Gradio's ``SessionState.__init__`` by its mirror above; raises
    ``GradioUnsupported`` unless Gradio's own still sets exactly those attributes.
    """
    from gradio import state_holder

    check_version()
    _require("SessionState.__init__ sets the attributes mirrored here", _mirror_holds)

    def init(self, blocks) -> None:
        _mirrored_init(self, blocks, make_configs)

    state_holder.SessionState.__init__ = init


def component_keys(session, blocks) -> Iterable:
    """The ids of the components a session of ``blocks`` holds a config for (Gradio's order)."""
    return [key for key in session.blocks_config.blocks if key in blocks.blocks]


def has_component(session, blocks, key) -> bool:
    """Whether a session of ``blocks`` holds a config for component ``key``."""
    return key in blocks.blocks and key in session.blocks_config.blocks


def component_config(session, key) -> dict:
    """The config of component ``key`` in ``session``, made as Gradio makes it."""
    config = session.blocks_config
    return config.config_for_block(key, [], config.blocks[key])


def forget_session(blocks, session: str) -> None:
    """Drop what Gradio keeps for an ended session (its state, its empty queue entries).

    Gradio keeps every session's ``SessionState`` (a copy of the page's
    blocks and every ``gr.State`` value) until 10,000 newer ones push it
    out; each REST call is a session, so memory grew by every call. A result
    not read yet stays readable (its messages are left alone).
    """
    holder = blocks.state_holder
    with holder.lock:
        holder.session_data.pop(session, None)
        holder.time_last_used.pop(session, None)
    queue = blocks._queue
    # Never while one of the session's events is still in the queue or running: Gradio
    # would fail to send its last message (a KeyError, and its reader cut off).
    if any(e.session_hash == session for e in list(queue.event_ids_to_events.values())):
        return
    queue.pending_event_ids_session.pop(session, None)
    messages = queue.pending_messages_per_session.get(session)
    if messages is not None and messages.empty():
        queue.pending_messages_per_session.pop(session, None)


# -- the queue's polling -------------------------------------------------------------------

# Gradio's queue looks for a new event every 1 ms and for progress to send every 10 ms, even
# with nothing to do (Linux values): about 1,100 wake-ups of the event loop a second, which
# cost an idle app 6% of a core. Each wake-up also takes a core from llama.cpp's decoding
# threads for a moment, and they wait for each other at every operation of a step. Every
# 10 ms and 50 ms instead: a new request starts at most 10 ms later (5 ms on average).
QUEUE_POLL_S = 0.01
PROGRESS_POLL_S = 0.05


def calm_queue(blocks, poll_s: float = QUEUE_POLL_S, progress_s: float = PROGRESS_POLL_S) -> None:
    """Make ``blocks``' queue poll every ``poll_s`` (new events) and ``progress_s`` (progress)."""
    queue = blocks._queue
    queue.sleep_when_free = poll_s
    queue.progress_update_sleep_when_free = progress_s


# -- the HTTP side: logins and queued events ---------------------------------------------


def login_user(app, cookies) -> str | None:
    """The user whose Gradio login token ``cookies`` (a ``SimpleCookie``) carries, if any."""
    cookie_id, tokens = app.cookie_id, app.tokens
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies and cookies[name].value in tokens:
            return tokens[cookies[name].value]
    return None


def queue_of(app):
    """The queue of the Blocks that the ASGI ``app`` (``scope["app"]``) serves."""
    return app.get_blocks()._queue


def session_of_event(queue, event_id: str) -> str | None:
    """The session of the queued or running event ``event_id`` (None once it is done)."""
    event = queue.event_ids_to_events.get(event_id)
    return event.session_hash if event is not None else None


def running_event_ids(queue):
    """The ids of the events queued or running now (a live view)."""
    return queue.event_ids_to_events.keys()


# -- uploads ------------------------------------------------------------------------------


def note_upload_temp_files(note: Callable[[str], None]) -> None:
    """Call ``note(path)`` for each temporary file Gradio's upload parser makes."""
    from gradio import route_utils

    check_version()
    _require("route_utils.NamedTemporaryFile", lambda: callable(route_utils.NamedTemporaryFile))
    original = route_utils.NamedTemporaryFile
    if getattr(original, "notes", None) is note:
        return

    def noting(*args, **kwargs):
        handle = original(*args, **kwargs)
        note(handle.name)
        return handle

    noting.notes = note
    route_utils.NamedTemporaryFile = noting
