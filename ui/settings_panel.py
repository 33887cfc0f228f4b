"""Decoding controls built from ``DecodingSettings`` fields, so UI and API agree."""

from __future__ import annotations

import gradio as gr

from chat.backends.base import Capabilities
from chat.settings import (
    IGNORED_BY,
    MAX_CANDIDATES,
    STRATEGIES,
    DecodingSettings,
    field_bounds,
)
from ui.errors import user_error

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
CUSTOM = "Custom"  # the preset box when the controls match no preset
STRATEGY_DEPENDENT = ("temperature", "top_p", "top_k", "num_beams")  # greyed where unused


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
    """The decoding-settings column: a preset picker and one control per field.

    ``service`` is read for the loaded backend's capabilities each time they
    matter, so a model loaded later gets controls that fit it (``refresh``).
    """

    def __init__(self, service, presets: dict, default: str, max_reply_tokens: int | None = None):
        self.service = service
        self.presets = presets
        self.preset = gr.Dropdown(
            choices=self._preset_names(),
            value=default,
            label="Preset",
            elem_id="preset",
            allow_custom_value=True,
        )
        self.controls: dict[str, gr.components.Component] = {}
        strategy = self._strategy_update()
        self.controls["strategy"] = gr.Radio(label="Strategy", elem_id="strategy", **strategy)
        for name, step in SLIDERS.items():
            overrides = {}
            if name == "top_p":  # top_p must stay above 0
                overrides["minimum"] = step
            if name == "max_new_tokens" and max_reply_tokens:
                overrides["maximum"] = min(max_reply_tokens, field_bounds(name)["maximum"])
            if name in ("num_beams", "num_return_sequences"):
                overrides |= self._slider_update(name)
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
        hidden = {"queue": False, "api_visibility": "private"}
        self.preset.change(self.apply_preset, self.preset, self.components, **hidden)
        for name, update in self.strategy_controls(strategy["value"]).items():
            self.controls[name].interactive = update["interactive"]
        used = [self.controls[n] for n in STRATEGY_DEPENDENT]
        self.controls["strategy"].change(
            lambda s: [gr.update(**u) for u in self.strategy_controls(s).values()],
            self.controls["strategy"],
            used,
            **hidden,
        )
        for control in self.components:  # a hand-set value is no preset's any more
            control.input(lambda: CUSTOM, None, self.preset, **hidden)

    @property
    def capabilities(self) -> Capabilities:
        """The loaded backend's capabilities."""
        return self.service.capabilities

    def _preset_names(self) -> list[str]:
        """Presets the loaded backend can run."""
        caps = self.capabilities
        return [n for n, p in self.presets.items() if p.strategy in caps.strategies] + [CUSTOM]

    def _strategy_update(self) -> dict:
        caps, backend = self.capabilities, self.service.info.backend
        supported = [s for s in STRATEGIES if s in caps.strategies]
        missing = [s for s in STRATEGIES if s not in caps.strategies]
        note = f" ({', '.join(missing)} not available on the {backend} backend)" if missing else ""
        default = DecodingSettings.model_fields["strategy"].default
        return {
            "choices": supported,
            "value": default if default in supported else supported[0],
            "info": DecodingSettings.model_fields["strategy"].description + note,
        }

    def strategy_controls(self, strategy: str) -> dict[str, dict]:
        """Per ``STRATEGY_DEPENDENT`` control: interactive only where ``strategy`` uses it."""
        ignored = IGNORED_BY.get(strategy, ())
        out = {n: {"interactive": n not in ignored} for n in STRATEGY_DEPENDENT}
        out["num_beams"]["interactive"] &= "beam" in self.capabilities.strategies
        return out

    def _slider_update(self, name: str) -> dict:
        caps = self.capabilities
        if name == "num_beams":  # refresh resets the strategy to its default
            return self.strategy_controls(self._strategy_update()["value"])["num_beams"]
        most = min(MAX_CANDIDATES, caps.max_candidates)
        return {"maximum": max(2, most), "interactive": most > 1}

    def refresh(self) -> list:
        """Updates of the preset, strategy and candidate controls for the loaded backend."""
        return [
            gr.update(choices=self._preset_names()),
            gr.update(**self._strategy_update()),
            gr.update(**self._slider_update("num_beams")),
            gr.update(**self._slider_update("num_return_sequences")),
        ]

    @property
    def refreshed(self) -> list:
        """The components ``refresh`` updates, in its order."""
        c = self.controls
        return [self.preset, c["strategy"], c["num_beams"], c["num_return_sequences"]]

    @property
    def components(self) -> list:
        """The controls, in ``FIELDS`` order (the order ``values_to_dict`` expects)."""
        return [self.controls[f] for f in FIELDS]

    def apply_preset(self, name: str) -> list:
        """Control values for a preset (strategies the backend lacks fall back to sampling)."""
        if name not in self.presets:
            return [gr.update() for _ in FIELDS]  # "Custom": the controls stay as they are
        return self.values(self.presets[name])

    def for_persona(self, settings: DecodingSettings, preset: str | None) -> list:
        """The preset box and control values for a persona's settings (``preset``: its name)."""
        name = preset if preset in self._preset_names() else CUSTOM
        return [name, *self.values(settings)]

    def values(self, settings: DecodingSettings) -> list:
        """Control values showing ``settings``."""
        data = settings.model_dump()
        if data["strategy"] not in self.capabilities.strategies:
            gr.Warning(f"{data['strategy']} is not available with this backend; using sample.")
            data["strategy"], data["num_beams"] = "sample", 1
        data["stop"] = "\n".join(s.replace("\n", "\\n") for s in data["stop"])
        data["seed"] = -1 if data["seed"] is None else data["seed"]
        return [data[f] for f in FIELDS]

    def read(self, values: dict) -> dict:
        """The settings dict for ``parse_settings`` from an event's values, keyed by
        component (Gradio's values of ``components``, zipped with them)."""
        return self.values_to_dict([values[self.controls[f]] for f in FIELDS])

    @staticmethod
    def values_to_dict(values) -> dict:
        """Control values in ``FIELDS`` order (as this browser keeps them) as a settings
        dict for ``parse_settings``."""
        data = dict(zip(FIELDS, values, strict=True))
        for name in ("top_k", "max_new_tokens", "num_return_sequences", "num_beams"):
            data[name] = _whole(data[name], name)
        seed = None if data["seed"] in (None, "") else _whole(data["seed"], "seed")
        data["seed"] = None if seed is None or seed < 0 else seed
        # One per line; a literal \\n stands for a newline (e.g. "\\nUser:").
        data["stop"] = [s.replace("\\n", "\n") for s in (data["stop"] or "").split("\n") if s]
        if data["strategy"] != "beam":
            data["num_beams"] = 1
        return data


def _whole(value, name: str) -> int:
    """A control's number as an int; a script's text there gets one sentence back."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise user_error(f"{name}: send a whole number.") from None
