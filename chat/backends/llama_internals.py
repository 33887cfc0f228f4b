"""Every use of llama-cpp-python below its public ``Llama`` class, in one place.

``Llama`` runs one sequence at a time and keeps the logits of the last token
only. Continuous batching (``llama_batch``) and perplexity (logits of every
position, ``llama_cpp_backend``) need its private parts: the model wrapper
``_model``, its context ``_ctx`` and batch ``_batch``, ``_init_sampler`` and
the ``_internals`` module. Each use sits here, with a comment saying which
public API is missing, so that a llama-cpp-python release that renames one
breaks this module only (``tests/test_llama_backend.py`` and
``tests/test_batching.py`` run every function). The plain C functions
(``llama_cpp.llama_*`` on the public ``Llama.ctx`` and ``Llama.model``
pointers) are public and used where they are needed.
"""

from __future__ import annotations


def n_ctx_train(llm) -> int:
    """The context length the model was trained with (0 if the file does not say)."""
    # Missing: ``Llama.n_ctx_train()``; only the private model wrapper has it.
    return llm._model.n_ctx_train()


def last_logits(llm):
    """A copy of the logits of the last token ``Llama.eval`` decoded."""
    import numpy as np

    # Missing: ``Llama.scores`` holds this row only for a model loaded with
    # logits_all=True (n_ctx x n_vocab floats kept for every generation).
    ptr = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def clear_kv(llm) -> None:
    """Empty the KV cache of ``llm``'s own context."""
    # Missing: ``Llama.reset()`` rewinds the token count but leaves the cache's cells.
    llm._ctx.kv_cache_clear()


def decode_all_logits(llm, ids: list[int], n_past: int):
    """Decode ``ids`` (at most ``llm.n_batch``) from ``n_past`` on ``llm``'s own context;
    the logits of every one of them, a view of rows x n_vocab."""
    import numpy as np

    # Missing: ``Llama.eval`` asks logits for every position only when the model was
    # loaded with logits_all=True; its own batch and context decode them on request.
    llm._batch.set_batch(batch=ids, n_past=n_past, logits_all=True)
    llm._ctx.decode(llm._batch)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(ids), llm.n_vocab()))


def new_context(llm, params):
    """A second context on ``llm``'s weights, made with ``params`` (``llama_context_params``)."""
    from llama_cpp import _internals

    # Missing: ``Llama`` makes its one context at load; another on the same weights
    # (with room for several sequences) needs the private model wrapper and context class.
    return _internals.LlamaContext(model=llm._model, params=params, verbose=False)


def new_batch(n_tokens: int):
    """A ``llama_batch`` of ``n_tokens`` entries, one sequence id each (``.batch``, ``.close``)."""
    from llama_cpp import _internals

    # Missing: a public Python batch type (``llama_batch_init``/``_free`` by hand otherwise).
    return _internals.LlamaBatch(n_tokens=n_tokens, embd=0, n_seq_max=1, verbose=False)


def new_sampler(llm, top_k: int, top_p: float, temp: float, repeat_penalty: float):
    """The sampler chain ``Llama.generate`` builds, so seeded results match a solo run."""
    # Missing: ``Llama.generate`` builds this chain inside and samples one sequence only.
    return llm._init_sampler(
        top_k=top_k, top_p=top_p, min_p=0.0, temp=temp, repeat_penalty=repeat_penalty
    )


class _CtxShim:
    """What the private ``LlamaSampler.sample`` needs of a context: its pointer."""

    def __init__(self, ctx):
        self.ctx = ctx


def sample(sampler, ctx, idx: int) -> int:
    """The token ``sampler`` picks from batch row ``idx`` of the context pointer ``ctx``."""
    # Missing: the sampler class (from ``_init_sampler``) takes the private context wrapper.
    return sampler.sample(_CtxShim(ctx), idx)


def is_end(llm, token: int) -> bool:
    """Whether ``token`` ends generation (EOS, EOT and the like)."""
    import llama_cpp

    # Missing: ``Llama`` has ``token_eos()`` but no test for every end-of-generation token.
    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))
