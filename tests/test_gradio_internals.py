"""The server starts only on a Gradio whose internals it was written for, and says why not."""

import gradio as gr
import pytest
from gradio import blocks as gradio_blocks
from gradio import route_utils, state_holder

from server import gradio_internals
from server.gradio_internals import GradioUnsupported


@pytest.fixture(scope="module")
def demo():
    with gr.Blocks() as blocks:
        gr.Textbox("Ada", label="name")
    blocks.queue()
    return blocks


def test_the_installed_gradio_passes(demo):
    gradio_internals.check_version()
    gradio_internals.check(demo)


@pytest.mark.parametrize("version", ["6.32.0", "5.31.0", "6.3.1", "7.0"])
def test_another_version_is_refused_naming_the_supported_ones(version):
    with pytest.raises(GradioUnsupported) as caught:
        gradio_internals.check_version(version)
    message = str(caught.value)
    assert f"Gradio {version} is installed" in message
    assert "Gradio 6.31.x only" in message and "pip install 'gradio==6.31.*'" in message


def test_every_6_31_release_is_accepted():
    gradio_internals.check_version("6.31.0")
    gradio_internals.check_version("6.31.7")


def test_an_installed_other_version_is_refused_at_start(demo, monkeypatch):
    monkeypatch.setattr(gradio_internals.metadata, "version", lambda name: "6.40.2")
    with pytest.raises(GradioUnsupported, match=r"Gradio 6\.40\.2 is installed.*6\.31\.x"):
        gradio_internals.check(demo)
    with pytest.raises(GradioUnsupported, match="6.31.x"):
        gradio_internals.defer_session_configs(dict)  # a patch is refused, not skipped


def test_a_missing_internal_is_named(demo, monkeypatch):
    monkeypatch.delattr(route_utils, "NamedTemporaryFile")
    monkeypatch.delattr(demo.app, "cookie_id")
    with pytest.raises(GradioUnsupported) as caught:
        gradio_internals.check(demo)
    message = str(caught.value)
    assert "route_utils.NamedTemporaryFile" in message and "App.cookie_id" in message
    assert "written for Gradio 6.31.x" in message
    assert "Blocks._queue" not in message  # what is there is not blamed
    with pytest.raises(GradioUnsupported, match="route_utils.NamedTemporaryFile"):
        gradio_internals.note_upload_temp_files(print)


def test_a_missing_queue_table_is_named(demo, monkeypatch):
    monkeypatch.delattr(demo._queue, "event_ids_to_events")
    with pytest.raises(GradioUnsupported, match="Blocks._queue.event_ids_to_events"):
        gradio_internals.check(demo)


def test_a_changed_session_state_is_refused_rather_than_mirrored_wrongly(demo, monkeypatch):
    source = "class SessionState:\n    def __init__(self, blocks):\n        self.new_thing = 1\n"
    real = gradio_internals.inspect.getsource
    monkeypatch.setattr(
        gradio_internals.inspect,
        "getsource",
        lambda obj: source if obj is state_holder.SessionState else real(obj),
    )
    with pytest.raises(GradioUnsupported, match="SessionState.__init__"):
        gradio_internals.check(demo)
    with pytest.raises(GradioUnsupported, match="SessionState.__init__"):
        gradio_internals.defer_session_configs(dict)


def test_reworded_refusals_are_refused(demo, monkeypatch):
    real = gradio_internals.inspect.getsource
    reworded = gradio_blocks.Blocks.validate_inputs
    monkeypatch.setattr(
        gradio_internals.inspect,
        "getsource",
        lambda obj: "raise ValueError('too few')" if obj is reworded else real(obj),
    )
    with pytest.raises(GradioUnsupported, match="refusals of malformed input"):
        gradio_internals.check(demo)


def test_the_app_refuses_to_start_on_another_gradio(tmp_path, monkeypatch):
    from server.launch import build
    from studio.config import AppConfig
    from studio.datadir import InstanceLock

    monkeypatch.setattr(gradio_internals.metadata, "version", lambda name: "6.40.2")
    config = AppConfig(host="127.0.0.1", port=7999, data_dir=tmp_path)
    with pytest.raises(GradioUnsupported, match=r"6\.40\.2 is installed.*6\.31\.x"):
        build(config, backend=None)  # refused before the model is even used
    InstanceLock(tmp_path).acquire().release()  # and the data folder is free again


def test_the_served_app_polls_its_queue_calmly(standin_app, standin_client):
    """Gradio's 1 ms / 10 ms idle polling (6% of a core, and a core taken from decoding
    a thousand times a second) is slowed to 10 ms / 50 ms; calls still run."""
    demo, _ = standin_app
    queue = demo._queue
    assert queue.sleep_when_free == gradio_internals.QUEUE_POLL_S >= 0.01
    assert queue.progress_update_sleep_when_free == gradio_internals.PROGRESS_POLL_S >= 0.05
    assert standin_client.predict(api_name="/personas")  # a queued call still runs


def test_calm_queue_sets_what_it_is_given(demo):
    gradio_internals.calm_queue(demo, 0.02, 0.2)
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.02, 0.2)
