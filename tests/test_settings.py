"""Decoding settings: bounds, Hugging Face names, presets."""

import pytest

from chat.backends.base import Capabilities
from chat.errors import SettingsError, UnsupportedSettingError
from chat.settings import DecodingSettings, field_bounds, load_presets, parse_settings
from tests.helpers.examples import HF_PIPELINE_EXAMPLE


def test_defaults_are_valid_sampling():
    s = parse_settings(None)
    assert s.strategy == "sample" and s.num_return_sequences == 1 and s.seed is None


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"top_k": -3}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"strategy": "nucleus"}, "strategy"),
    ],
)
def test_invalid_values_name_the_field(raw, field):
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    assert field in str(err.value)


def test_unknown_setting_lists_valid_ones():
    with pytest.raises(SettingsError, match="temprature: unknown setting.*temperature"):
        parse_settings({"temprature": 0.5})


def test_hf_pipeline_example_is_expressible():
    s = parse_settings(HF_PIPELINE_EXAMPLE)
    assert (s.strategy, s.max_length, s.temperature, s.top_p) == ("sample", 150, 0.8, 0.9)


def test_beam_width_means_beam_search():
    s = parse_settings({"beam_width": 5, "repetition_penalty": 1.2})
    assert (s.strategy, s.num_beams, s.repetition_penalty) == ("beam", 5, 1.2)
    assert parse_settings({"do_sample": False}).strategy == "greedy"


def test_inconsistent_combinations_are_rejected():
    with pytest.raises(SettingsError, match="num_beams"):
        parse_settings({"strategy": "beam", "num_beams": 1})
    with pytest.raises(SettingsError, match="num_return_sequences"):
        parse_settings({"strategy": "greedy", "num_return_sequences": 2})
    with pytest.raises(SettingsError, match="num_return_sequences"):
        parse_settings({"strategy": "beam", "num_beams": 2, "num_return_sequences": 3})


def test_settings_merge_over_a_base():
    base = parse_settings({"strategy": "greedy", "max_new_tokens": 50})
    s = parse_settings({"max_new_tokens": 10}, base=base)
    assert (s.strategy, s.max_new_tokens) == ("greedy", 10)
    # do_sample in the overrides wins over the base strategy
    assert parse_settings({"do_sample": True}, base=base).strategy == "sample"


def test_stop_accepts_a_single_string():
    assert parse_settings({"stop": "###"}).stop == ["###"]


def test_field_bounds_drive_sliders():
    b = field_bounds("temperature")
    assert (b["minimum"], b["maximum"], b["default"]) == (0.0, 2.0, 0.7)
    assert b["info"]


def test_presets_are_data_and_valid():
    presets = load_presets()
    assert {"Precise", "Balanced", "Creative"} <= set(presets)
    assert presets["Precise"].strategy == "greedy"
    assert presets["Creative"].temperature > presets["Balanced"].temperature
    assert all(isinstance(p, DecodingSettings) for p in presets.values())


def test_capabilities_refuse_beam_with_a_clear_error():
    caps = Capabilities(frozenset({"greedy", "sample"}), 4)
    with pytest.raises(UnsupportedSettingError, match="does not support 'beam'"):
        caps.check(parse_settings({"beam_width": 3}), "llama-cpp")
    caps.check(parse_settings({"strategy": "greedy"}), "llama-cpp")
