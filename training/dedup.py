"""Near-duplicate texts without comparing every pair.

Two texts are near duplicates when ``difflib``'s similarity ratio is 0.9 or
more. Comparing each new text with every kept one costs a quadratic number of
ratios, each itself slow on long texts. Instead each text gets a MinHash
signature of its character 4-grams (one hash, 64 bins, empty bins filled from
the next full one), cut into 32 bands of 2 values; kept texts sharing a band
with the new one are its candidates (texts with a third of their 4-grams in
common nearly always share one). A candidate is then confirmed exactly: cheap
bounds first (lengths, the longest common prefix or suffix, letter counts),
``difflib``'s ratio only when they cannot decide. A confirmed pair is one the
old all-pairs check would have found; a near pair whose 4-grams differ a lot
(edits every few letters) can be missed.
"""

from __future__ import annotations

import difflib

NEAR = 0.9  # difflib similarity ratio at which two texts count as the same
Q = 4  # characters per gram
BINS = 64
PER_BAND = 2
BANDS = BINS // PER_BAND
MIN_SHARED = 0.375  # candidates with fewer equal bins are not near duplicates in practice
_SHIFT = 58  # 64 bins: a gram's bin is the top 6 bits of its hash
_EMPTY = (1 << 64) - 1


def signature(text: str):
    """One-permutation MinHash of the text's character ``Q``-grams: ``BINS`` uint64 values."""
    import numpy as np

    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    codes = codes.astype(np.uint64)
    if len(codes) < Q:
        codes = np.concatenate([codes, np.zeros(Q - len(codes), dtype=np.uint64)])
    n = len(codes) - Q + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(Q):  # a polynomial hash of each gram (wrapping uint64)
        h = h * np.uint64(1_000_003) + codes[j : j + n]
    h = _mix(h)
    sig = np.full(BINS, _EMPTY, dtype=np.uint64)
    np.minimum.at(sig, (h >> np.uint64(_SHIFT)).astype(np.intp), h & np.uint64((1 << _SHIFT) - 1))
    empty = sig == np.uint64(_EMPTY)
    if empty.any():  # fill each empty bin from the next full one (rotation), marked by distance
        full = np.flatnonzero(~empty)
        gaps = np.flatnonzero(empty)
        nxt = full[np.searchsorted(full, gaps) % len(full)]
        dist = ((nxt - gaps) % BINS).astype(np.uint64)
        sig[gaps] = sig[nxt] + dist * np.uint64(1 << _SHIFT)
    return sig


def _band_keys(sig) -> list[bytes]:
    raw = sig.tobytes()
    step = 8 * PER_BAND
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def _mix(h):
    """splitmix64's finaliser: every input bit moves every output bit."""
    import numpy as np

    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def is_near(a: str, b: str) -> bool:
    """Exactly ``difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR``.

    The ratio is 2·M/(len a + len b), M the characters difflib matches. M is
    at least the longest common prefix or suffix (difflib takes the longest
    common block first) and at most the longest common subsequence, computed
    bit-parallel; difflib itself runs only when these bounds cannot decide.
    """
    total = len(a) + len(b)
    if total == 0:
        return True
    if 2.0 * min(len(a), len(b)) / total < NEAR:
        return False
    head = _common_prefix(a, b)
    tail = _common_prefix(a[head:][::-1], b[head:][::-1])
    if 2.0 * max(head, tail) / total >= NEAR:
        return True
    # The longest common subsequence: the common ends, and that of the middles.
    lcs = head + tail + _lcs_length(a[head : len(a) - tail], b[head : len(b) - tail])
    if 2.0 * lcs / total < NEAR:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR


def _lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence (Hyyrö's bit-parallel algorithm, b as bits)."""
    if not a or not b:
        return 0
    import numpy as np

    if len(a) < len(b):
        a, b = b, a  # the shorter one as the bit vector: fewer, shorter big integers
    codes = np.frombuffer(b.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    masks = {}
    for code in np.unique(codes):
        bits = np.packbits(codes == code, bitorder="little").tobytes()
        masks[chr(code)] = int.from_bytes(bits, "little")
    full = (1 << len(b)) - 1
    v = full
    for ch in a:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search on C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class NearIndex:
    """Kept texts, indexed by band keys: ``find`` a near duplicate, ``add`` a new text."""

    def __init__(self):
        import numpy as np

        self._texts: list[str] = []
        self._sigs = np.zeros((64, BINS), dtype=np.uint64)
        self._bands: list[dict[bytes, list[int]]] = [{} for _ in range(BANDS)]

    def find(self, text: str, sig=None) -> bool:
        """Whether a kept text is a near duplicate of ``text``.

        Candidates share a band; the likeliest (most equal bins) are checked
        first, and those with under ``MIN_SHARED`` of the bins equal (a 4-gram
        overlap far below any near duplicate's) are not checked at all.
        """
        import numpy as np

        sig = signature(text) if sig is None else sig
        found: set[int] = set()
        for band, key in zip(self._bands, _band_keys(sig), strict=True):
            found.update(band.get(key, ()))
        if not found:
            return False
        ids = np.fromiter(found, dtype=np.intp, count=len(found))
        shared = (self._sigs[ids] == sig).mean(axis=1)
        for k in np.argsort(-shared, kind="stable"):
            if shared[k] < MIN_SHARED:
                break
            if is_near(text, self._texts[ids[k]]):
                return True
        return False

    def add(self, text: str, sig=None) -> None:
        """Keep ``text``."""
        import numpy as np

        sig = signature(text) if sig is None else sig
        index = len(self._texts)
        if index == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.zeros_like(self._sigs)])
        self._sigs[index] = sig
        self._texts.append(text)
        for band, key in zip(self._bands, _band_keys(sig), strict=True):
            band.setdefault(key, []).append(index)
