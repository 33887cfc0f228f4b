"""Persona cards: validation, macros, few-shot placement, storage, character card V2."""

import base64
import json
import os

import pytest
import yaml

from chat.errors import PersonaError
from personas import Persona, PersonaStore
from personas.cards import describe_error
from personas.charcard import card_from_v2, card_to_v2, import_card, write_png_chara
from personas.store import card_to_yaml, parse_card, slugify
from tests.helpers.examples import V2

SHIPPED = {"assistant", "catgirl", "translator", "tutor", "sentiment", "storyteller"}


def test_every_shipped_card_loads():
    store = PersonaStore()
    rows = {r["id"]: r for r in store.list()}
    assert SHIPPED <= set(rows)
    assert all(r["error"] is None and r["source"] == "shipped" for r in rows.values())
    assert store.list()[0]["id"] == "assistant"
    assert store.get("catgirl").system_prompt == "你是一只可爱的猫娘，你必须遵从主人的命令"
    assert store.get("catgirl").greeting


def test_good_card_unknown_field_and_bad_macro():
    card = parse_card("name: Bob\nsystem_prompt: Hi {{user}}, I am {{char}}.\n")
    assert card.prefix_messages(user="Ann")[0]["content"] == "Hi Ann, I am Bob."
    with pytest.raises(PersonaError, match=r"bob.yaml: greting: unknown field"):
        parse_card("name: Bob\ngreting: hello\n", "bob.yaml")
    with pytest.raises(PersonaError, match=r"greeting: unknown macro \{\{usr\}\}"):
        parse_card("name: Bob\ngreeting: Hi {{usr}}\n", "bob.yaml")
    with pytest.raises(PersonaError, match=r"example_dialogue\[0\]\.content: unknown macro"):
        parse_card("name: B\nexample_dialogue:\n- {role: user, content: '{{x}}'}\n")


def test_macros_expand_in_every_text_field():
    card = Persona(
        name="Zed",
        system_prompt="{{char}} talks to {{user}} on {{date}}",
        greeting="Hello {{ user }}",
        example_dialogue=[{"role": "user", "content": "I am {{user}}"}],
    )
    prefix = card.prefix_messages(user="Kim")
    assert prefix[0]["content"].startswith("Zed talks to Kim on 20")
    assert prefix[1]["content"] == "I am Kim"
    assert card.greeting_text(user="Kim") == "Hello Kim"


def test_few_shot_examples_come_between_system_and_conversation():
    prefix = PersonaStore().get("translator").prefix_messages()
    assert prefix[0]["role"] == "system"
    assert prefix[1:5] == [
        {"role": "user", "content": "英文: Hello"},
        {"role": "assistant", "content": "中文: 你好"},
        {"role": "user", "content": "英文: Goodbye"},
        {"role": "assistant", "content": "中文: 再见"},
    ]


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "a/b\\c",
        "\0x",
        "C:\\Windows\\evil",
        "   ",
        "猫娘 v2",
    ],
)
def test_slugs_never_leave_the_folder(name, tmp_path):
    slug = slugify(name)
    assert slug and "/" not in slug and "\\" not in slug and ".." not in slug and "\0" not in slug
    store = PersonaStore(tmp_path / "personas")
    pid = store.save_shared(Persona(name=name.strip() or "x"))
    files = list((tmp_path / "personas").iterdir())
    assert len(files) == 1 and files[0].parent == tmp_path / "personas"
    assert store.source(pid) == "shared"


def test_user_cards_never_overwrite_shipped_ones(tmp_path):
    store = PersonaStore(tmp_path)
    pid = store.save_shared(Persona(name="Assistant", system_prompt="custom"))
    assert pid == "assistant-shared"
    assert store.get("assistant").system_prompt != "custom"
    assert store.get(pid).system_prompt == "custom"
    with pytest.raises(PersonaError, match="cannot be deleted"):
        store.delete_shared("assistant")
    store.delete_shared(pid)
    assert pid not in {r["id"] for r in store.list()}


def test_broken_file_is_listed_and_others_still_load(tmp_path):
    (tmp_path / "good.yaml").write_text("name: Good\n", encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    (tmp_path / "typo.yaml").write_text("name: T\nsystem_promt: x\n", encoding="utf-8")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    rows = {r["id"]: r for r in PersonaStore(tmp_path).list()}
    assert rows["good"]["error"] is None and SHIPPED <= set(rows)
    assert "not valid YAML" in rows["broken"]["error"]
    assert "typo.yaml: system_promt: unknown field" in rows["typo"]["error"]
    assert rows["binary"]["error"]
    with pytest.raises(PersonaError, match="broken"):
        PersonaStore(tmp_path).get("broken")


def test_save_is_atomic(tmp_path, monkeypatch):
    store = PersonaStore(tmp_path)
    pid = store.save_shared(Persona(name="Keeper", system_prompt="first version"))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save_shared(Persona(name="Keeper", system_prompt="second version"))
    assert PersonaStore(tmp_path).get(pid).system_prompt == "first version"
    assert [p.name for p in tmp_path.iterdir()] == ["keeper.yaml"]  # no temp file left


def test_yaml_round_trip_of_a_card():
    card = PersonaStore().get("sentiment")
    assert parse_card(card_to_yaml(card)) == card


def test_v2_json_import_maps_fields_and_exports_losslessly():
    card = import_card(json.dumps(V2).encode(), "mira.json")
    assert card.name == "Captain Mira" and card.greeting == "Welcome aboard, {{user}}."
    assert "starship captain" in card.system_prompt and "{{original}}" not in card.system_prompt
    assert "Scenario: On the bridge" in card.system_prompt
    assert [e.role for e in card.example_dialogue] == ["user", "assistant"]
    assert card.tags == ["sci-fi", "captain"]
    assert card_to_v2(card) == V2
    # ... also after a trip through the user store's YAML file
    assert card_to_v2(parse_card(card_to_yaml(card))) == V2


def test_png_card_import_and_round_trip():
    blob = write_png_chara(V2)
    card = import_card(blob, "mira.png")
    assert card.name == "Captain Mira" and card_to_v2(card) == V2
    with pytest.raises(PersonaError, match="no character card"):
        import_card(write_png_chara(V2)[:8] + b"\0\0\0\0IEND\xaeB`\x82", "empty.png")


def test_edited_imported_card_exports_the_edits_and_keeps_the_rest():
    card = card_from_v2(V2).model_copy(update={"greeting": "Ahoy there!"})
    out = card_to_v2(card)
    assert out["data"]["first_mes"] == "Ahoy there!"
    assert out["data"]["alternate_greetings"] == V2["data"]["alternate_greetings"]


def test_bad_card_files_are_explained():
    with pytest.raises(PersonaError, match="expected V2 JSON"):
        import_card(b"\x00\x01binary", "x.json")
    with pytest.raises(PersonaError, match="no name"):
        import_card(json.dumps({"data": {"description": "x"}}).encode(), "x.json")
    bad_png = write_png_chara(V2).replace(base64.b64encode(json.dumps(V2).encode())[:10], b"!!!!")
    with pytest.raises(PersonaError):
        import_card(bad_png, "x.png")


def test_error_description_names_file_and_field():
    from pydantic import ValidationError

    try:
        Persona.model_validate(yaml.safe_load("name: x\nfoo: 1"))
    except ValidationError as exc:
        assert describe_error("x.yaml", exc).startswith("x.yaml: foo: unknown field")


def test_a_png_card_brings_its_picture_as_a_small_avatar():
    """Issue 17.17: an imported card's avatar is kept (a thumbnail, as a checked data URL)."""
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(picture, format="PNG")
    card = import_card(write_png_chara(V2, picture.getvalue()), "mira.png")
    assert card.avatar.startswith("data:image/jpeg;base64,") and len(card.avatar) < 24_000
    assert parse_card(card_to_yaml(card)).avatar == card.avatar
    with pytest.raises(PersonaError, match="avatar"):
        parse_card('name: X\navatar: "javascript:alert(1)"\n')
