"""Teach the model: datasets, parameter-efficient trainers (SFT, reward model, DPO),
adapters and their export. Plain Python; no Gradio here (the page is ``ui/``, who may
train is ``studio/``)."""
