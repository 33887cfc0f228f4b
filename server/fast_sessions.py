"""A new Gradio session without rendering the whole page's config first.

Gradio 6.31 builds, for every new session, the config of every component
(``SessionState.config_values``, ~300 components here: about 15 ms), though
only deep links ever read it whole; an event needs the configs of its outputs.
Each REST call (``/gradio_api/call/...``) is a new session, so that was most
of the time a script waited for ``/chat`` beyond the model's own. Here each
config is made when first needed, from the same blocks, with the same result.

Only for the Gradio version whose ``SessionState.__init__`` this mirrors
(requirements.txt pins it); any other version is left as it is.
"""

from __future__ import annotations

import os
from copy import copy

MIRRORED_VERSION = "6.31.0"


class _LazyConfigs(dict):
    """A session's ``config_values``: each component's config made when first needed.

    Gradio asks for one key at a time when it updates a component (``in``,
    then ``[key] =``), and walks all of them only for deep links; a walk
    fills in every missing key first, so it sees what the eager dict held.
    """

    def __init__(self, session, blocks):
        super().__init__()
        self._session, self._blocks = session, blocks

    def _make(self, key):
        config = self._session.blocks_config
        return config.config_for_block(key, [], config.blocks[key])

    def __missing__(self, key):
        if key not in self._blocks.blocks or key not in self._session.blocks_config.blocks:
            raise KeyError(key)
        value = self[key] = self._make(key)
        return value

    def _fill(self) -> None:
        config = self._session.blocks_config
        for key in config.blocks:
            if key in self._blocks.blocks and not dict.__contains__(self, key):
                dict.__setitem__(self, key, self._make(key))

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()

    def keys(self):
        self._fill()
        return super().keys()

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()


def _init(self, blocks) -> None:
    """``SessionState.__init__`` of Gradio 6.31, with ``config_values`` deferred."""
    self.blocks_config = copy(blocks.default_config)
    self.config_values = _LazyConfigs(self, blocks)
    self.state_data = {}
    self._state_ttl = {}
    self.is_closed = False
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def install() -> bool:
    """Defer the per-session config; returns whether it applies to this Gradio."""
    import gradio
    from gradio import state_holder

    if gradio.__version__ != MIRRORED_VERSION:
        return False
    state_holder.SessionState.__init__ = _init
    return True


def forget(blocks, session: str) -> None:
    """Drop what Gradio keeps for an ended session (its state, its empty queue entries).

    Gradio keeps every session's ``SessionState`` (a copy of the page's
    blocks and every ``gr.State`` value) until 10,000 newer ones push it
    out; each REST call is a session, so memory grew by every call. A result
    not read yet stays readable (its messages are left alone).
    """
    holder = getattr(blocks, "state_holder", None)
    if holder is not None:
        with holder.lock:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return
    # Never while one of the session's events is still in the queue or running: Gradio
    # would fail to send its last message (a KeyError, and its reader cut off).
    if any(e.session_hash == session for e in list(queue.event_ids_to_events.values())):
        return
    queue.pending_event_ids_session.pop(session, None)
    messages = queue.pending_messages_per_session.get(session)
    if messages is not None and messages.empty():
        queue.pending_messages_per_session.pop(session, None)
