"""A new Gradio session makes component configs on demand, with the same result as Gradio's."""

import gradio as gr
from gradio import state_holder

from server import fast_sessions


def eager(blocks, session):
    config = session.blocks_config
    return {
        k: config.config_for_block(k, [], v) for k, v in config.blocks.items() if k in blocks.blocks
    }


def test_configs_are_made_on_demand_and_match_gradios():
    with gr.Blocks() as demo:
        name = gr.Textbox("Ada", label="name")
        gr.Slider(0, 2, 0.7, label="temperature")
        gr.State([1, 2])
    fast_sessions.install()  # raises on a Gradio whose SessionState it does not mirror
    session = state_holder.SessionState(demo)
    assert dict.__len__(session.config_values) == 0  # nothing made yet
    # What Gradio does when an event updates a component: one key, nothing else built.
    session._update_value_in_config(name._id, "Grace")
    assert dict.__len__(session.config_values) == 1
    assert session.config_values[name._id]["props"]["value"] == "Grace"
    # A walk over all of them (deep links) sees every component, as the eager dict did.
    expected = eager(demo, session)
    expected[name._id]["props"]["value"] = "Grace"
    assert dict(session.config_values.items()) == expected
    assert [c for c in session.components] == [c for c in expected.values() if c]
