"""Near-duplicate detection: syndicated copies are caught, look-alikes are not."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from ingestor.analyze.fingerprint import content_hash, fingerprint, scheme_id
from ingestor.core.dedup import judge_duplicate, new_entries, similarity, updated_entries
from ingestor.core.entry import FeedEntry
from ingestor.core.state import EntryVersion, NearCandidate
from tests.conftest import LOREM_EN

STORY = "\n\n".join(LOREM_EN)
BOILERPLATE = (
    "Sign up for our newsletter to get the latest news delivered to your inbox every "
    "morning. Follow us on social media and share this article with your friends. "
    "Copyright Example News, all rights reserved, reproduction prohibited."
)
OTHER_STORY = (
    "The national football team qualified for the European championship after a narrow "
    "victory against its neighbours on Saturday evening, thanks to a late goal scored by a "
    "substitute who had entered the pitch only ten minutes earlier. The coach praised the "
    "character of his young squad and said the team would now prepare for the tournament "
    "with two friendly matches in June. Supporters celebrated late into the night in the "
    "streets of the capital, where giant screens had been set up on the main square."
)


def test_content_hash_folds_case_whitespace_and_punctuation():
    assert content_hash("Hello,  World!\n\nAgain") == content_hash("hello world again")
    assert content_hash("Hello world") != content_hash("Hello there world")


def test_syndicated_copy_with_edit_and_extra_paragraph_is_near_duplicate():
    copy = STORY.replace("four hundred million euros", "about 400 million euros")
    copy += "\n\nThe council will publish the detailed timetable of the works next month."
    a, b = fingerprint(STORY), fingerprint(copy)
    assert similarity(a.signature, b.signature) >= 0.5
    assert set(a.band_keys) & set(b.band_keys), "LSH must surface the copy as a candidate"


def test_same_site_boilerplate_does_not_make_different_articles_duplicates():
    a = fingerprint(STORY + "\n\n" + BOILERPLATE)
    b = fingerprint(OTHER_STORY + "\n\n" + BOILERPLATE)
    assert similarity(a.signature, b.signature) < 0.2


def test_short_article_quoting_a_long_one_is_not_a_duplicate():
    short = (
        "In a short statement, the opposition reacted: "
        + LOREM_EN[0]
        + " The party said it would ask for an independent audit."
    )
    long_fp, short_fp = fingerprint(STORY), fingerprint(short)
    verdict = judge_duplicate(
        None, short_fp.signature, [NearCandidate("long", long_fp.signature, 1.0)], 0.5
    )
    assert not verdict.is_duplicate


def test_judge_prefers_exact_then_earliest_near_match():
    fp = fingerprint(STORY)
    copy = fingerprint(STORY + " One more sentence at the end of the copy.")
    candidates = [
        NearCandidate("later", copy.signature, 200.0),
        NearCandidate("first", copy.signature, 100.0),
    ]
    assert judge_duplicate("exact-id", fp.signature, candidates, 0.5).kind == "exact"
    verdict = judge_duplicate(None, fp.signature, candidates, 0.5)
    assert verdict.duplicate_of == "first" and verdict.kind == "near"
    assert 0.5 <= verdict.similarity <= 1.0


def test_tiny_texts_only_take_part_in_exact_matching():
    tiny = fingerprint("Breaking: storm warning.")
    assert tiny.signature is None and tiny.band_keys == ()


def test_scheme_names_version_and_lsh_shape():
    from ingestor.analyze.fingerprint import legacy_scheme_id

    assert scheme_id(128, 0.5).startswith("ingestor-2/crc32x3-fmix64/affine32/")
    assert legacy_scheme_id(128, 0.5).startswith("datasketch-2.0/affine32/")
    assert scheme_id(128, 0.5) != scheme_id(64, 0.5)


def test_both_schemes_find_the_same_near_duplicates_and_no_others():
    from ingestor.analyze.fingerprint import minhash_values, normalized_words, shingles

    base = " ".join(LOREM_EN)
    edited = base.replace("a", "o", 3) + " One more closing sentence from the wire service."
    other = " ".join(reversed(base.split()))
    first = fingerprint(base, legacy=True)
    # Scheme 1 is datasketch's own computation, unchanged.
    assert first.legacy_signature == minhash_values(shingles(normalized_words(base)), 128).tobytes()
    for text, near in ((edited, True), (other, False)):
        second = fingerprint(text, legacy=True)
        for new, old in (
            (first.signature, second.signature),
            (first.legacy_signature, second.legacy_signature),
        ):
            assert (similarity(new, old) >= 0.5) is near
    # Without `legacy` nothing of scheme 1 is computed.
    assert fingerprint(base).legacy_signature is None


def test_a_candidate_of_the_old_scheme_is_compared_in_the_old_scheme():
    fp = fingerprint(" ".join(LOREM_EN), legacy=True)
    old_copy = NearCandidate("old", fp.legacy_signature, 1.0, legacy=True)
    assert judge_duplicate(None, fp.signature, [old_copy], 0.5, fp.legacy_signature).kind == "near"
    # Compared with the new scheme's signature, it would look unrelated.
    assert (
        judge_duplicate(
            None, fp.signature, [NearCandidate("old", fp.legacy_signature, 1.0)], 0.5
        ).kind
        is None
    )


def entry(key: str, updated: float | None = None) -> FeedEntry:
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(updated, UTC) if updated else None
    return FeedEntry(key=key, link=None, title=key, summary=None, content=None, updated=moment)


def test_new_entries_keeps_first_occurrence_of_unseen_keys():
    entries = [entry("a"), entry("b"), entry("a"), entry("c")]
    assert [e.key for e in new_entries(entries, {"a", "c"})] == ["a", "c"]


def test_updated_entries_need_a_later_date_or_other_text():
    entries = [entry("a", 2000.0), entry("b", 1000.0), entry("c", None)]
    same = {e.key: e.text_digest for e in entries}
    known = {k: EntryVersion(1000.0, same[k]) for k in "abc"}
    assert [e.key for e in updated_entries(entries, known)] == ["a"]
    # The same date, other text: an update in every format (RSS 2.0 has no <updated>).
    edited = [replace(e, summary="Corrected: the bridge opens in May.") for e in entries]
    assert [e.key for e in updated_entries(edited, known)] == ["a", "b", "c"]
    # Recorded before digests were kept: judged by its date alone.
    legacy = {k: EntryVersion(1000.0, None) for k in "abc"}
    assert [e.key for e in updated_entries(edited, legacy)] == ["a"]


def test_cjk_text_is_shingled_by_character():
    text = (
        "気象庁は四日、東北地方で記録的な大雪が降る恐れがあるとして、交通機関への影響に"
        "警戒するよう呼びかけた。山形県と秋田県の山沿いでは、最大で八十センチの降雪が予想"
        "されている。鉄道各社は最新の運行情報を確認するよう利用者に求めている。"
    )
    copy = text + "詳しい情報は後ほど発表される。"
    a, b = fingerprint(text), fingerprint(copy)
    assert a.signature is not None and b.signature is not None
    assert similarity(a.signature, b.signature) >= 0.5


def test_lsh_shape_matches_datasketch_rule():
    from datasketch.lsh import _optimal_param

    from ingestor.analyze.fingerprint import lsh_params

    for num_perm in (16, 64, 128, 256):
        for threshold in (0.3, 0.5, 0.7, 0.9):
            assert lsh_params(num_perm, threshold) == tuple(
                _optimal_param(threshold, num_perm, 0.5, 0.5)
            ), (num_perm, threshold)


def test_minhash_values_equal_datasketch_affine32():
    from datasketch import MinHash

    from ingestor.analyze.fingerprint import minhash_values, normalized_words, shingles

    texts = [" ".join(LOREM_EN), "Le gouvernement a annoncé mardi de nouvelles mesures " * 5]
    for text in texts:
        grams = shingles(normalized_words(text))
        for num_perm in (16, 128, 256):
            reference = MinHash(num_perm=num_perm, seed=1, scheme="affine32")
            reference.update_batch(list(grams))
            assert minhash_values(grams, num_perm).tolist() == reference.hashvalues.tolist()


def test_the_table_of_lsh_parameters_is_what_the_computation_gives():
    from ingestor.analyze.fingerprint import _KNOWN_LSH_PARAMS, compute_lsh_params

    for (num_perm, threshold), expected in _KNOWN_LSH_PARAMS.items():
        assert compute_lsh_params(num_perm, threshold) == expected


def test_the_main_process_runs_without_the_workers_heavy_libraries():
    # The daemon's process names the worker jobs and the dedup scheme but runs neither:
    # loading numpy, lxml, trafilatura or feedparser there would only cost start-up time.
    probe = (
        "import sys, ingestor.service.cli, ingestor.service.runtime, ingestor.core.dedup\n"
        "from ingestor.pipeline.articles import ArticleWorker\n"
        "from ingestor.analyze.fingerprint import scheme_id\n"
        "scheme_id(128, 0.5)\n"
        "heavy = {'numpy', 'lxml', 'trafilatura', 'feedparser', 'langdetect'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"
