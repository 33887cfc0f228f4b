"""Who may train, on what, and what the Train tab shows of the data (no training runs here)."""

from __future__ import annotations

import json

import pytest

from chat.errors import InputError
from studio.access import Access, AccessError, Caller
from studio.training import Training, TrainLimits, parse_settings
from tests.helpers.tiny_models import save_tiny
from training.errors import TrainingError
from training.settings import TrainSettings

U1 = {"role": "user", "content": "What is 7 plus 8?"}
A1 = {"role": "assistant", "content": "7 + 8 = 15", "feedback": "like"}
U2 = {"role": "user", "content": "What is the capital of France?"}
A2 = {"role": "assistant", "content": "Paris.", "feedback": "like"}
CHATS = [{"id": "c1", "messages": [U1, A1, U2, A2]}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny"))


def make(tmp_path, tiny, private=True, logins=False, **limits) -> Training:
    access = Access(b"s" * 32, logins=logins, admins={"alice"}, private=private)
    return Training(tmp_path / "training", access, TrainLimits(**limits), tiny)


ADMIN = Caller("s-admin", None, True)
VISITOR = Caller("s-visitor", None, False)


def test_a_visitor_of_a_shared_app_may_not_train_unless_allowed(tmp_path, tiny):
    shared = make(tmp_path, tiny, private=False)
    with pytest.raises(AccessError, match="--allow-training"):
        shared.inspect_data(VISITOR, {"conversations": CHATS})
    shared.check(ADMIN)  # admins always may
    make(tmp_path, tiny, private=False, allow_training=True).check(VISITOR)
    with pytest.raises(TrainingError, match="remote engine"):
        Training(tmp_path, Access(b"s" * 32), TrainLimits(), None).check(ADMIN)


def test_owners_are_logins_browsers_or_the_one_local_user(tmp_path, tiny):
    assert make(tmp_path, tiny).owner(VISITOR) == ""  # a laptop: one user, every adapter
    shared = make(tmp_path, tiny, private=False)
    assert shared.owner(VISITOR) == "s-visitor" != shared.owner(ADMIN)
    logged = make(tmp_path, tiny, logins=True)
    assert logged.owner(Caller("a", "bob", False)) == logged.owner(Caller("b", "bob", False))


def test_liked_replies_become_rows_with_counts_and_a_preview_as_trained(tmp_path, tiny):
    t = make(tmp_path, tiny)
    out = t.inspect_data(ADMIN, {"conversations": CHATS * 3, "settings": {"eval_share": 0.5}})
    c = out["counts"]
    # Each reply once (the app writes two shapes); the repeated chats are exact duplicates.
    assert c["loaded"] == 2 and c["train"] == 1 and c["eval"] == 1, c
    pv = out["preview"]
    loss = "".join(p for p, carries in pv["tokens"] if carries)
    context = "".join(p for p, carries in pv["tokens"] if not carries)
    assert loss.strip().startswith(("7 + 8 = 15", "Paris."))
    assert "What is" in context and pv["n_tokens"] == len(pv["tokens"])


def test_jsonl_bad_lines_by_number_and_the_caps(tmp_path, tiny):
    t = make(tmp_path, tiny, max_train_rows=3, max_train_upload_mb=0.001)
    good = json.dumps({"prompt": "What is 7 plus 8?", "completion": "7 + 8 = 15"})
    out = t.inspect_data(ADMIN, {"source": "jsonl", "jsonl": good + "\n{oops\n"})
    assert out["n_errors"] == 1 and out["errors"][0].startswith("line 2:")
    with pytest.raises(InputError, match="--max-train-upload-mb"):
        t.inspect_data(ADMIN, {"source": "jsonl", "jsonl": good + "\n" + "x" * 2000})
    rows = "\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(4))
    t.limits.max_train_upload_mb = 1
    with pytest.raises(InputError, match="--max-train-rows"):
        t.inspect_data(ADMIN, {"source": "jsonl", "jsonl": rows})
    with pytest.raises(TrainingError, match="No preference pairs"):
        t.inspect_data(ADMIN, {"conversations": CHATS, "settings": {"kind": "dpo"}})


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"method": {"lora_r": 999}}, "settings.method.lora_r: input should be less than"),
        ({"epochs": "many"}, "settings.epochs: input should be a valid integer"),
        ({"lr": 1}, "settings.lr: unknown argument; the arguments are: kind, method"),
    ],
)
def test_bad_settings_are_one_sentence(settings, says):
    with pytest.raises(InputError) as err:
        parse_settings(settings)
    msg = str(err.value)
    assert msg.startswith(says), msg
    assert msg.count(". ") == 0 and "\n" not in msg


def test_a_job_or_adapter_of_another_is_not_found(tmp_path, tiny):
    t = make(tmp_path, tiny, private=False, allow_training=True)
    t._owners["job-1"] = ("s-admin", "s-admin")
    with pytest.raises(AccessError, match="No training job"):
        t.status(VISITOR, "job-1")
    with pytest.raises(AccessError, match="No training job"):
        t.stop(VISITOR, "job-1")
    with pytest.raises(InputError, match="job"):
        t.status(VISITOR, "x" * 500)


def test_the_form_is_built_from_the_settings_model():
    from ui.train_panel import form_fields, form_values

    fields = dict(form_fields(TrainSettings))
    assert {"kind", "method.method", "method.lora_r", "max_steps", "start_from"} <= set(fields)
    names = list(fields)
    defaults = {"method.target_modules": "", "max_steps": None, "learning_rate": None,
                "start_from": ""}  # fmt: skip
    values = [defaults.get(n, fields[n].get_default(call_default_factory=True)) for n in names]
    values[names.index("method.lora_r")] = 16.0  # a slider sends a float
    values[names.index("method.target_modules")] = "q_proj, v_proj"
    parsed = parse_settings(form_values(names, fields, values))
    assert parsed.method.lora_r == 16 and parsed.method.target_modules == ["q_proj", "v_proj"]
    assert parsed.max_steps is None and parsed.start_from is None


def test_free_disk_is_checked_before_a_job_writes(tmp_path, tiny):
    t = make(tmp_path, tiny, min_free_mb=10_000_000)  # more than any disk has free
    with pytest.raises(TrainingError, match="--min-free-mb"):
        t.start(ADMIN, {"conversations": CHATS, "settings": {"max_steps": 1}})
    assert not (tmp_path / "training" / "jobs").exists()  # nothing was started


@pytest.mark.slow  # trains a tiny model in a child process
def test_a_job_stops_when_its_owner_leaves(tmp_path, tiny):
    t = make(tmp_path, tiny, private=False, allow_training=True)
    try:
        settings = {"max_steps": 2000, "batch_size": 1, "eval_share": 0.0}
        job = t.start(VISITOR, {"conversations": CHATS, "settings": settings})["job"]
        t.access.caller(type("R", (), {"session_hash": VISITOR.session, "username": None})())
        t.access.close(VISITOR.session)  # an API session that is over: nobody is left to read
        final = t.jobs().wait(job, timeout=180)
        assert final["state"] == "stopped", final
    finally:
        t.close()
