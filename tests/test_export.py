"""Exporting a trained adapter: the peft folder, a merged model and a GGUF LoRA file.

Fast tests run on a tiny Llama made in the test; the GGUF file is read back with
the ``gguf`` package against a stand-in base GGUF of the same shapes. The round trip
through llama.cpp on the bundled model is in test_export_roundtrip.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.tiny_export import ANSWER, greedy, tiny_adapter
from training.export import (
    ExportError,
    base_model_of,
    export_gguf_lora,
    export_merged,
    export_peft,
    permute_rows,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama base folder and a LoRA adapter trained on it."""
    return tiny_adapter(tmp_path_factory.mktemp("tiny"))


def test_the_adapter_changed_the_answer(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = trained
    tok = AutoTokenizer.from_pretrained(base)
    before = greedy(AutoModelForCausalLM.from_pretrained(base), tok)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    assert before != ANSWER
    assert greedy(tuned, tok) == ANSWER


def test_export_peft_copies_a_loadable_adapter(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = trained
    dest = export_peft(adapter, tmp_path / "out" / "peft")
    assert {p.name for p in dest.iterdir()} == {p.name for p in adapter.iterdir()}
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".part")]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dest)
    assert greedy(tuned, AutoTokenizer.from_pretrained(base)) == ANSWER
    with pytest.raises(ExportError, match="already exists"):
        export_peft(adapter, dest)


def test_export_merged_equals_the_adapter(trained, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = trained
    assert base_model_of(adapter) == str(base)
    dest = export_merged(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(dest)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tok = AutoTokenizer.from_pretrained(dest)
    assert tok.chat_template
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    ids = torch.tensor(
        [tok.apply_chat_template([{"role": "user", "content": "Hello"}])["input_ids"]]
    )
    with torch.inference_mode():
        want, got = tuned(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    assert greedy(merged, tok) == ANSWER


def test_export_refuses_a_folder_without_an_adapter(tmp_path):
    with pytest.raises(ExportError, match="not a peft adapter folder"):
        export_peft(tmp_path, tmp_path / "x")


# -- GGUF LoRA, read back with the gguf package ----------------------------------


def _stand_in_gguf(path, base_dir):
    """A GGUF 'model' with the tiny Llama's tensor names and shapes (zeros) and its head counts."""
    from gguf import GGUFWriter
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(base_dir)
    w = GGUFWriter(str(path), arch="llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    h, f, kv = c.hidden_size, c.intermediate_size, c.hidden_size // c.num_attention_heads * 2
    for i in range(c.num_hidden_layers):
        for name, rows, cols in [("attn_q", h, h), ("attn_k", kv, h), ("attn_v", kv, h),
                                 ("attn_output", h, h), ("ffn_gate", f, h), ("ffn_up", f, h),
                                 ("ffn_down", h, f)]:  # fmt: skip
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros((rows, cols), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_lora_has_llama_cpp_names_keys_and_permuted_qk(trained, tmp_path):
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    base, adapter = trained
    stand_in = _stand_in_gguf(tmp_path / "base.gguf", base)
    out = export_gguf_lora(adapter, stand_in, tmp_path / "lora.gguf")
    r = GGUFReader(str(out))
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.type"] == "adapter"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == 2 * 7 * 2  # A and B for 7 linear layers in 2 blocks
    peft = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.{}_proj.lora_{}.weight"
    # ggml lists dimensions innermost first: A is [in, rank], B is [rank, out]
    assert tensors["blk.1.attn_k.weight.lora_a"].shape.tolist() == [32, 4]
    assert tensors["blk.1.attn_k.weight.lora_b"].shape.tolist() == [4, 16]
    np.testing.assert_array_equal(
        tensors["blk.1.attn_k.weight.lora_a"].data, peft[key.format("k", "A")]
    )
    np.testing.assert_array_equal(
        tensors["blk.1.attn_v.weight.lora_b"].data, peft[key.format("v", "B")]
    )
    k_b = peft[key.format("k", "B")]
    got = tensors["blk.1.attn_k.weight.lora_b"].data
    assert not np.array_equal(got, k_b)  # rows reordered for llama.cpp's rotary layout ...
    np.testing.assert_array_equal(got, permute_rows(k_b, 2))  # ... per KV head
    q_b = tensors["blk.0.attn_q.weight.lora_b"].data
    np.testing.assert_array_equal(
        q_b, permute_rows(peft[key.replace("1", "0", 1).format("q", "B")], 4)
    )


def test_permute_rows_interleaves_the_halves_of_each_head():
    rows = np.arange(8).reshape(8, 1)  # two heads of four rotary dimensions
    assert permute_rows(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_gguf_export_refuses_a_mismatched_base(trained, tmp_path):
    from gguf import GGUFWriter

    _, adapter = trained
    other = tmp_path / "other.gguf"
    w = GGUFWriter(str(other), arch="llama")
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    for i in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros((48, 48), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ExportError, match="trained on another base model"):
        export_gguf_lora(adapter, other, tmp_path / "bad.gguf")
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "bad.gguf").exists()


def test_gguf_export_refuses_other_methods(trained, tmp_path):
    _, adapter = trained
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (ia3 / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ExportError, match="Only LoRA adapters"):
        export_gguf_lora(ia3, tmp_path / "whatever.gguf", tmp_path / "x.gguf")


def test_an_adapter_trained_on_top_of_another_exports_as_their_sum(trained, tmp_path):
    """DPO started from an SFT adapter: the merged export and the GGUF file carry both."""
    import torch
    from gguf import GGUFReader
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.helpers.tiny_export import save_adapter, train_lora

    base, first = trained
    tok = AutoTokenizer.from_pretrained(base)
    start = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), first)
    second = train_lora(start.merge_and_unload(), tok, answer="7 + 8 = 16", steps=5)
    on_top = save_adapter(second, first.parent / "a2", str(base), name="dpo")
    meta = json.loads((on_top / "adapter_meta.json").read_text())
    (on_top / "adapter_meta.json").write_text(json.dumps({**meta, "start_from": first.name}))
    want = second.merge_and_unload()  # base + first + second

    merged = AutoModelForCausalLM.from_pretrained(export_merged(on_top, tmp_path / "merged"))
    key = "model.layers.1.self_attn.v_proj.weight"
    torch.testing.assert_close(merged.state_dict()[key], want.state_dict()[key])

    out = export_gguf_lora(
        on_top, _stand_in_gguf(tmp_path / "base.gguf", base), tmp_path / "stacked.gguf"
    )
    r = GGUFReader(str(out))
    tensors = {t.name: t.data for t in r.tensors}
    alpha = float(r.fields["adapter.lora.alpha"].contents())
    a, b = tensors["blk.1.attn_v.weight.lora_a"], tensors["blk.1.attn_v.weight.lora_b"]
    assert a.shape[0] == b.shape[1] == alpha == 8  # two rank-4 LoRAs, stacked
    plain = AutoModelForCausalLM.from_pretrained(base).state_dict()[key].numpy()
    delta = alpha / a.shape[0] * b @ a  # what llama.cpp adds to W
    np.testing.assert_allclose(plain + delta, want.state_dict()[key].numpy(), atol=1e-5)
