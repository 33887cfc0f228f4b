"""Example inputs that several test modules use."""

import json

# A character card V2 (chara_card_v2) with every field set.
V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Captain Mira",
        "description": "A starship captain who speaks in nautical terms.",
        "personality": "brave, dry humour",
        "scenario": "On the bridge of the Endeavour, {{user}} reports for duty.",
        "first_mes": "Welcome aboard, {{user}}.",
        "mes_example": "<START>\n{{user}}: Status?\n{{char}}: All hands steady, {{user}}.",
        "system_prompt": "{{original}} Stay in character as {{char}}.",
        "post_history_instructions": "Keep replies under 50 words.",
        "alternate_greetings": ["Ahoy!", "Report, sailor."],
        "tags": ["sci-fi", "captain"],
        "creator_notes": "Made for testing.",
        "creator": "tester",
        "character_version": "1.1",
        "extensions": {"depth_prompt": {"prompt": "x", "depth": 4}},
    },
}


# Settings as Hugging Face pipeline('text-generation') examples write them.
HF_PIPELINE_EXAMPLE = {
    "max_length": 150,
    "num_return_sequences": 1,
    "temperature": 0.8,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "do_sample": True,
}


# Four preference pairs (chosen clearly better than rejected), as uploaded JSONL.
PREFERENCE_JSONL = "\n".join(
    json.dumps({"prompt": q, "chosen": good, "rejected": bad})
    for q, good, bad in [
        ("What is 7 plus 8?", "7 + 8 = 15", "no"),
        ("Say hello.", "Hello there!", "no"),
        ("What is the capital of France?", "Paris.", "no"),
        ("Is the fox quick?", "Yes, the quick brown fox.", "no"),
    ]
)
