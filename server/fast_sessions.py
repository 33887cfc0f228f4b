"""A new Gradio session without rendering the whole page's config first.

Gradio 6.31 builds, for every new session, the config of every component
(``SessionState.config_values``, ~300 components here: about 15 ms), though
only deep links ever read it whole; an event needs the configs of its outputs.
Each REST call (``/gradio_api/call/...``) is a new session, so that was most
of the time a script waited for ``/chat`` beyond the model's own. Here each
config is made when first needed, from the same blocks, with the same result.

Gradio's ``SessionState`` is reached through ``server.gradio_internals``,
which refuses (with a start-up error) a Gradio whose ``__init__`` is not the
one it mirrors, rather than leaving the patch out.
"""

from __future__ import annotations

from server import gradio_internals


class _LazyConfigs(dict):
    """A session's ``config_values``: each component's config made when first needed.

    Gradio asks for one key at a time when it updates a component (``in``,
    then ``[key] =``), and walks all of them only for deep links; a walk
    fills in every missing key first, so it sees what the eager dict held.
    """

    def __init__(self, session, blocks):
        super().__init__()
        self._session, self._blocks = session, blocks

    def __missing__(self, key):
        if not gradio_internals.has_component(self._session, self._blocks, key):
            raise KeyError(key)
        value = self[key] = gradio_internals.component_config(self._session, key)
        return value

    def _fill(self) -> None:
        for key in gradio_internals.component_keys(self._session, self._blocks):
            if not dict.__contains__(self, key):
                dict.__setitem__(self, key, gradio_internals.component_config(self._session, key))

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


def install() -> None:
    """Defer the per-session config; raises ``GradioUnsupported`` on a Gradio it does not fit."""
    gradio_internals.defer_session_configs(_LazyConfigs)
