"""Small inputs that used to cost the app far more than the sender: refused, quickly.

Rows 1 and 2 of part two, and the rows that held: oversized cards, path-like
card names, a compressed PNG bomb, YAML that asks to run Python.
"""

from __future__ import annotations

import json
import struct
import time
import zlib

import httpx
from gradio_client import Client, handle_file

from tests.security.conftest import dependency, login, queue_call

# Six levels of nested anchors: about 360 bytes that expand to millions of nodes.
ALIAS_BOMB = """name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
system_prompt: *f
"""


def save_card(app, text: str, session: str, http=None) -> dict:
    fn = dependency(app.url, http=http, trigger="persona-save")
    return queue_call(app.url, fn, [text, {}], session, http=http)


def import_card(app, path, session: str, http=None) -> dict:
    """Upload a file, then call the editor's import event with it, as the page does."""
    http = http or httpx.Client(base_url=app.url, timeout=120)
    with open(path, "rb") as f:
        r = http.post("/gradio_api/upload", files=[("files", (path.name, f))])
    if r.status_code != 200:
        return {"status": r.status_code, "detail": r.text}
    file_data = {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
    fn = dependency(app.url, http=http, trigger="persona-import")
    return queue_call(app.url, fn, [file_data, {}], session, http=http)


def test_yaml_alias_bomb_is_refused_at_once(public_app):
    t0 = time.perf_counter()
    out = save_card(public_app, ALIAS_BOMB, "bomber")
    assert time.perf_counter() - t0 < 5
    assert not out["success"] and "aliases" in str(out["output"])
    assert not list((public_app.data_dir / "personas").glob("*"))
    # The editor still answers at once afterwards.
    t0 = time.perf_counter()
    assert save_card(public_app, "name: Fine card\n", "bomber")["success"]
    assert time.perf_counter() - t0 < 5


def test_oversized_card_text_is_refused(public_app):
    out = save_card(public_app, "name: Big\nsystem_prompt: " + "x" * 200_000 + "\n", "big")
    assert not out["success"] and "at most" in str(out["output"])


def test_yaml_that_asks_to_run_python_is_never_run(public_app, tmp_path):
    marker = tmp_path / "pwned"
    card = f'name: !!python/object/apply:os.system ["touch {marker}"]\n'
    out = save_card(public_app, card, "tagger")
    assert not out["success"] and not marker.exists()


def test_path_like_card_names_stay_in_the_personas_folder(auth_app):
    alice = login(auth_app, "alice")  # an admin: her cards are written to the shared folder
    for name in ("../../../etc/passwd", "/tmp/evil", "..", "C:\\\\Windows\\\\x"):
        out = save_card(auth_app, f'name: "{name}"\n', f"alice-{len(name)}", http=alice)
        assert out["success"], out
    folder = auth_app.data_dir / "personas"
    written = sorted(p.name for p in folder.iterdir())
    assert written and all(p.parent == folder for p in folder.iterdir())
    assert not (auth_app.data_dir.parent / "etc").exists()


def test_a_50_mb_card_is_refused(public_app, tmp_path):
    card = tmp_path / "huge.json"
    card.write_bytes(b'{"name": "x", "description": "' + b"y" * (50 * 2**20) + b'"}')
    out = import_card(public_app, card, "huge-card")
    assert out.get("status") == 413 or not out["success"]


def test_a_card_over_the_card_limit_is_refused_with_a_reason(auth_app, tmp_path):
    card = tmp_path / "nine.json"
    card.write_bytes(b'{"name": "x", "description": "' + b"y" * (9 * 2**20) + b'"}')
    bob = login(auth_app, "bob")
    out = import_card(auth_app, card, "bob-big-card", http=bob)
    assert not out["success"] and "limited to 8 MB" in str(out["output"])


def test_a_compressed_png_bomb_is_refused(public_app, tmp_path):
    """A PNG whose zTXt 'chara' chunk inflates to 1 GB."""
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(bytes(64 * 2**20)) for _ in range(16))
    body += compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"zTXt", b"chara\x00\x00" + body)
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    t0 = time.perf_counter()
    out = import_card(public_app, path, "png-bomb")
    assert time.perf_counter() - t0 < 30
    assert not out["success"]


def test_json_that_unpacks_a_thousandfold_is_refused_per_file(public_app, tmp_path):
    bomb = tmp_path / "bomb.json"
    # Each value in its own list, so that each repeats the long key path.
    bomb.write_text("[" * 60 + "[0]," * 4999 + "[0]" + "]" * 60, encoding="utf-8")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"festival": "Lanterns on the river, every June."}))
    client = Client(public_app.url, verbose=False)
    t0 = time.perf_counter()
    out = client.predict(
        files=[handle_file(str(p)) for p in (bomb, deep, good)], api_name="/ingest"
    )
    assert time.perf_counter() - t0 < 60
    status = {o["file"]: o for o in out}
    assert status["bomb.json"]["status"] == "error"
    assert "unpacks to more than" in status["bomb.json"]["error"]
    assert status["deep.json"]["status"] == "error"
    assert "nested more than" in status["deep.json"]["error"]
    assert "RecursionError" not in status["deep.json"]["error"]
    assert status["good.json"]["status"] == "added"


def test_a_character_card_png_still_imports(auth_app, tmp_path):
    """The checks above must not stop real cards (a V2 card in a PNG tEXt chunk)."""
    from personas.charcard import write_png_chara

    card = {"spec": "chara_card_v2", "data": {"name": "Pip", "first_mes": "Hello!"}}
    path = tmp_path / "pip.png"
    path.write_bytes(write_png_chara(card))
    bob = login(auth_app, "bob")
    out = import_card(auth_app, path, "bob-pip", http=bob)
    assert out["success"], out
    assert "mine-pip" in out["output"]["data"][0]  # the browser's cards, sent back
