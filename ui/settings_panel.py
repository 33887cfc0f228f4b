"""Decoding controls built from ``DecodingSettings`` fields, so UI and API agree."""

from __future__ import annotations

import gradio as gr

from chat.backends.base import Capabilities
from chat.settings import MAX_CANDIDATES, STRATEGIES, DecodingSettings, field_bounds

SLIDERS = {  # field -> step
    "temperature": 0.05,
    "top_p": 0.01,
    "top_k": 1,
    "repetition_penalty": 0.01,
    "max_new_tokens": 1,
    "num_return_sequences": 1,
    "num_beams": 1,
}
FIELDS = ["strategy", *SLIDERS, "seed", "stop"]


def slider_for(model, name: str, step: float, **overrides) -> gr.Slider:
    """A slider whose range, default and help text come from a pydantic field."""
    b = field_bounds(name, model)
    args = {
        "minimum": b.get("minimum", 0),
        "maximum": b["maximum"],
        "step": step,
        "value": b["default"],
        "label": name,
        "info": b["info"],
        "elem_id": f"setting-{name}",
    }
    return gr.Slider(**(args | overrides))


class SettingsPanel:
    """The decoding-settings column: a preset picker and one control per field."""

    def __init__(self, capabilities: Capabilities, backend: str, presets: dict, default: str):
        self.capabilities = capabilities
        self.presets = presets
        supported = [s for s in STRATEGIES if s in capabilities.strategies]
        missing = [s for s in STRATEGIES if s not in capabilities.strategies]
        note = f" ({', '.join(missing)} not available on the {backend} backend)" if missing else ""
        self.preset = gr.Dropdown(
            choices=list(presets), value=default, label="Preset", elem_id="preset"
        )
        self.controls: dict[str, gr.components.Component] = {}
        desc = DecodingSettings.model_fields["strategy"].description
        default = DecodingSettings.model_fields["strategy"].default
        self.controls["strategy"] = gr.Radio(
            supported,
            value=default if default in supported else supported[0],
            label="Strategy",
            info=desc + note,
            elem_id="strategy",
        )
        for name, step in SLIDERS.items():
            overrides = {
                "interactive": not (name == "num_beams" and "beam" not in capabilities.strategies)
            }
            if name == "top_p":  # top_p must stay above 0
                overrides["minimum"] = step
            if name == "num_return_sequences":
                overrides["maximum"] = min(MAX_CANDIDATES, capabilities.max_candidates)
            self.controls[name] = slider_for(DecodingSettings, name, step, **overrides)
        self.controls["seed"] = gr.Number(
            value=-1,
            precision=0,
            minimum=-1,
            label="seed",
            elem_id="setting-seed",
            info="-1 picks a seed at random and records it with the reply.",
        )
        self.controls["stop"] = gr.Textbox(
            label="stop", info="One stop string per line.", lines=2, elem_id="setting-stop"
        )
        self.preset.change(self.apply_preset, self.preset, self.components, queue=False)

    @property
    def components(self) -> list:
        """The controls, in ``FIELDS`` order (the order ``values_to_dict`` expects)."""
        return [self.controls[f] for f in FIELDS]

    def apply_preset(self, name: str) -> list:
        """Control values for a preset (strategies the backend lacks fall back to sampling)."""
        return self.values(self.presets[name])

    def values(self, settings: DecodingSettings) -> list:
        """Control values showing ``settings``."""
        data = settings.model_dump()
        if data["strategy"] not in self.capabilities.strategies:
            gr.Warning(f"{data['strategy']} is not available with this backend; using sample.")
            data["strategy"], data["num_beams"] = "sample", 1
        data["stop"] = "\n".join(s.replace("\n", "\\n") for s in data["stop"])
        data["seed"] = -1 if data["seed"] is None else data["seed"]
        return [data[f] for f in FIELDS]

    @staticmethod
    def values_to_dict(values) -> dict:
        """Turn control values back into a settings dict for ``parse_settings``."""
        data = dict(zip(FIELDS, values, strict=True))
        for name in ("top_k", "max_new_tokens", "num_return_sequences", "num_beams"):
            data[name] = int(data[name])
        seed = data["seed"]
        data["seed"] = None if seed in (None, "") or int(seed) < 0 else int(seed)
        # One per line; a literal \\n stands for a newline (e.g. "\\nUser:").
        data["stop"] = [s.replace("\\n", "\n") for s in (data["stop"] or "").split("\n") if s]
        if data["strategy"] != "beam":
            data["num_beams"] = 1
        return data
