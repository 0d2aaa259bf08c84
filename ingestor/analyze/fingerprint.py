"""Content fingerprints: an exact hash of the normalized body and a MinHash signature with
its LSH band keys (word 3-shingles). Pure and CPU-bound: computed in the worker processes.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from functools import cache
from typing import TYPE_CHECKING

from ingestor.core.analysis import Fingerprint

if TYPE_CHECKING:
    import numpy as np

SHINGLE_WORDS = 3
# Fewer shingles than this are too little evidence for a near-duplicate verdict: short texts
# only take part in exact matching.
MIN_SHINGLES = 20
# A CJK character is a token of its own (those scripts put no spaces between words), so
# shingles there are character trigrams; elsewhere they are word trigrams.
_WORD = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|"
    r"[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+",
    re.UNICODE,
)
_SEED = 1
_MINHASH_SCHEME = "affine32"


def scheme_id(num_perm: int, threshold: float) -> str:
    """Stored beside every signature: signatures of different schemes never compare.

    Version 2 hashes the shingles in numpy (crc32 per distinct word, three word hashes
    mixed into one 64-bit value) instead of one SHA-1 per shingle in Python: 35% less CPU
    per body (issue 16). The permutations and bands are datasketch's, as in version 1."""
    bands, rows = lsh_params(num_perm, threshold)
    return (
        f"ingestor-2/crc32x3-fmix64/{_MINHASH_SCHEME}/seed{_SEED}/p{num_perm}/b{bands}r{rows}"
        f"/shingle{SHINGLE_WORDS}-cjkchar"
    )


def legacy_scheme_id(num_perm: int, threshold: float) -> str:
    """Version 1 (datasketch's own hashing, SHA-1 per shingle): what records ingested before
    version 2 carry; computed beside version 2 while such records are within the dedup
    window, so that new articles are still compared with them."""
    bands, rows = lsh_params(num_perm, threshold)
    return (
        f"datasketch-2.0/{_MINHASH_SCHEME}/sha1/seed{_SEED}/p{num_perm}/b{bands}r{rows}"
        f"/shingle{SHINGLE_WORDS}-cjkchar"
    )


# lsh_params for common settings, as computed below (tests/test_dedup.py checks them), so
# that the main process, which only needs the scheme's name, never imports numpy.
_KNOWN_LSH_PARAMS = {
    (64, 0.5): (14, 4),
    (64, 0.6): (10, 6),
    (64, 0.7): (8, 8),
    (64, 0.8): (5, 11),
    (64, 0.9): (3, 21),
    (128, 0.5): (25, 5),
    (128, 0.6): (18, 7),
    (128, 0.7): (14, 9),
    (128, 0.8): (9, 13),
    (128, 0.9): (5, 25),
    (256, 0.5): (42, 6),
    (256, 0.6): (32, 8),
    (256, 0.7): (25, 10),
    (256, 0.8): (17, 15),
    (256, 0.9): (9, 28),
}


def lsh_params(num_perm: int, threshold: float) -> tuple[int, int]:
    known = _KNOWN_LSH_PARAMS.get((num_perm, threshold))
    return known if known is not None else compute_lsh_params(num_perm, threshold)


@cache
def compute_lsh_params(num_perm: int, threshold: float) -> tuple[int, int]:
    """Bands and rows that minimise false positives plus false negatives at threshold
    (datasketch's MinHashLSH rule, equal weights, its 100-step trapezoid integrals;
    computed here because importing datasketch.lsh pulls in scipy, 0.4 s of start-up in
    every process). Every (bands, rows) pair at once in numpy: 8 ms instead of the 130 ms
    of the same sums in a Python loop, which every process paid at start."""
    import numpy as np

    pairs = np.array(
        [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)],
        dtype=np.float64,
    )
    bands, rows = pairs[:, :1], pairs[:, 1:]
    false_positives = _trapezoid(lambda s: 1 - (1 - s**rows) ** bands, 0.0, threshold)
    false_negatives = _trapezoid(lambda s: (1 - s**rows) ** bands, threshold, 1.0)
    best = int(np.argmin(false_positives + false_negatives))  # the first of equals
    return int(pairs[best, 0]), int(pairs[best, 1])


def _trapezoid(
    function: Callable[[np.ndarray], np.ndarray], low: float, high: float, steps: int = 100
) -> np.ndarray:
    import numpy as np

    width = (high - low) / steps
    values = function((low + np.arange(steps + 1) * width).reshape(1, -1))
    return width * (values[:, 1:-1].sum(axis=1) + (values[:, 0] + values[:, -1]) / 2)


def normalized_words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def content_hash(text: str) -> str:
    """Hash of the body with case, punctuation and whitespace folded."""
    canonical = " ".join(normalized_words(text))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def shingles(words: list[str], size: int = SHINGLE_WORDS) -> set[bytes]:
    return {
        " ".join(words[i : i + size]).encode("utf-8") for i in range(max(len(words) - size + 1, 0))
    }


@cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.0's affine32 parameters for seed 1: h -> a*h + b mod 2^32, a odd."""
    import numpy as np

    generator = np.random.RandomState(_SEED)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(values: np.ndarray) -> np.ndarray:
    # MurmurHash3's finalizer: datasketch pre-mixes every input hash with it.
    import numpy as np

    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def minhash_values(grams: Iterable[bytes], num_perm: int) -> np.ndarray:
    """datasketch.MinHash(num_perm, seed=1, scheme="affine32").update_batch(grams).hashvalues.

    The same computation written out (tests/test_dedup.py checks it against datasketch):
    importing datasketch loads its LSH classes and with them scipy, 0.3 s of start-up and
    about 40 MB in every worker, for a dozen lines of numpy.
    """
    import numpy as np

    hashed = np.fromiter(
        (int.from_bytes(hashlib.sha1(gram).digest()[:4], "little") for gram in grams),
        dtype=np.uint32,
    )
    a, b = _permutations(num_perm)
    if hashed.size == 0:
        return np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    permuted = _fmix32(hashed).reshape(-1, 1) * a + b
    return permuted.min(axis=0)


def fingerprint(
    text: str, num_perm: int = 128, threshold: float = 0.5, legacy: bool = False
) -> Fingerprint:
    """The body's exact hash and its MinHash signature and bands in the current scheme;
    with `legacy`, also in version 1 (see legacy_scheme_id)."""
    words = normalized_words(text)
    digest = "sha256:" + hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()
    hashed = shingle_hashes(words)
    if hashed.size < MIN_SHINGLES:
        return Fingerprint(digest, None, (), int(hashed.size))
    values = _min_permuted(hashed, num_perm)
    legacy_signature, legacy_bands = None, ()
    if legacy:
        old = minhash_values(shingles(words), num_perm)
        legacy_signature, legacy_bands = old.tobytes(), band_keys(old, num_perm, threshold)
    return Fingerprint(
        digest,
        values.tobytes(),
        band_keys(values, num_perm, threshold),
        int(hashed.size),
        legacy_signature,
        legacy_bands,
    )


_MIX64 = (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)


def shingle_hashes(words: list[str], size: int = SHINGLE_WORDS) -> np.ndarray:
    """The distinct 32-bit hashes of the body's word 3-shingles (version 2): crc32 of each
    distinct word, the three words' hashes of each shingle packed and mixed by
    MurmurHash3's 64-bit finalizer, its high half kept."""
    import numpy as np

    if len(words) < size:
        return np.zeros(0, dtype=np.uint32)
    known: dict[str, int] = {}
    ids = np.fromiter(
        (known[w] if w in known else known.setdefault(w, zlib.crc32(w.encode())) for w in words),
        dtype=np.uint64,
        count=len(words),
    )
    with np.errstate(over="ignore"):
        packed = (ids[:-2] << np.uint64(32)) | ids[1:-1]
        mixed = _fmix64(packed ^ _fmix64(ids[2:] + np.uint64(0x9E3779B97F4A7C15)))
    return np.unique((mixed >> np.uint64(32)).astype(np.uint32))


def _fmix64(values: np.ndarray) -> np.ndarray:
    import numpy as np

    first, second = np.uint64(_MIX64[0]), np.uint64(_MIX64[1])
    values = values ^ (values >> np.uint64(33))
    values = values * first
    values = values ^ (values >> np.uint64(33))
    values = values * second
    return values ^ (values >> np.uint64(33))


def _min_permuted(hashed: np.ndarray, num_perm: int) -> np.ndarray:
    a, b = _permutations(num_perm)
    return (hashed.reshape(-1, 1) * a + b).min(axis=0)


def band_keys(values: np.ndarray, num_perm: int, threshold: float) -> tuple[int, ...]:
    """One 63-bit key per LSH band (the band index is mixed in, so bands never collide)."""
    bands, rows = lsh_params(num_perm, threshold)
    keys = []
    for band in range(bands):
        chunk = values[band * rows : (band + 1) * rows].tobytes()
        digest = hashlib.blake2b(struct.pack("<H", band) + chunk, digest_size=8).digest()
        keys.append(int.from_bytes(digest, "little") >> 1)
    return tuple(keys)
