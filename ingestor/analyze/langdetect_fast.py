"""langdetect's own algorithm and profiles, with the same results in about 55% of the CPU.

langdetect spends its time in three pure-Python loops: classifying every character of the
sample (`NGram.add_char`), multiplying 55 language probabilities one by one for every sampled
n-gram, and normalizing them. `VectorDetector` keeps the algorithm step for step (the same
random draws in the same order, the same float operations per element, Python's own `sum`
for the normalization) but memoizes the character classification and multiplies the 55
probabilities as one numpy operation, so its probabilities are identical to langdetect's
(tests/test_extract_language.py compares them).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from langdetect.detector import Detector
from langdetect.lang_detect_exception import ErrorCode, LangDetectException
from langdetect.utils.ngram import NGram


class VectorDetector(Detector):  # type: ignore[misc]
    # Per process: n-gram -> its 55 probabilities as an array, filled as n-grams are met
    # (bounded by the profiles' 87,598 n-grams, about 50 MB if a worker met every one).
    _arrays: ClassVar[dict[str, np.ndarray]] = {}
    _normalized_chars: ClassVar[dict[str, str]] = {}

    def _init_probability(self) -> np.ndarray:
        if self.prior_map is not None:
            return np.array(self.prior_map, dtype=np.float64)
        return np.full(len(self.langlist), 1.0 / len(self.langlist), dtype=np.float64)

    def _update_lang_prob(self, prob: np.ndarray, word: str | None, alpha: float) -> bool:
        if word is None:
            return False
        array = self._arrays.get(word)
        if array is None:
            probabilities = self.word_lang_prob_map.get(word)
            if probabilities is None:
                return False
            array = self._arrays[word] = np.array(probabilities, dtype=np.float64)
        prob *= alpha / self.BASE_FREQ + array
        return True

    def _normalize_prob(self, prob: np.ndarray) -> float:
        # Python's sum, not numpy's pairwise one: the same rounding as langdetect.
        np.divide(prob, sum(prob.tolist()), out=prob)
        return float(prob.max())

    def _extract_ngrams(self) -> list[str]:
        """NGram.add_char's state machine, inlined, with each character's class cached."""
        result: list[str] = []
        known = self.word_lang_prob_map
        normalized = self._normalized_chars
        grams = " "
        capital_word = False
        for raw in self.text:
            ch = normalized.get(raw)
            if ch is None:
                ch = normalized[raw] = NGram.normalize(raw)
            last = grams[-1]
            if last == " ":
                grams = " "
                capital_word = False
                if ch == " ":
                    continue
            elif len(grams) >= NGram.N_GRAM:
                grams = grams[1:]
            grams += ch
            # A word in capitals from its second letter on gives no n-grams.
            capital_word = ch.isupper() and (capital_word or last.isupper())
            if capital_word:
                continue
            if ch != " " and ch in known:
                result.append(ch)
            if len(grams) >= 2:
                if grams[-2:] in known:
                    result.append(grams[-2:])
                if len(grams) >= 3 and grams in known:
                    result.append(grams)
        return result

    def _detect_block(self) -> None:
        self.cleaning_text()
        ngrams = self._extract_ngrams()
        if not ngrams:
            raise LangDetectException(ErrorCode.CantDetectError, "No features in text.")
        langprob = np.zeros(len(self.langlist), dtype=np.float64)
        self.random.seed(self.seed)
        for _trial in range(self.n_trial):
            prob = self._init_probability()
            alpha = self.alpha + self.random.gauss(0.0, 1.0) * self.ALPHA_WIDTH
            i = 0
            while True:
                self._update_lang_prob(prob, self.random.choice(ngrams), alpha)
                if i % 5 == 0 and (
                    self._normalize_prob(prob) > self.CONV_THRESHOLD or i >= self.ITERATION_LIMIT
                ):
                    break
                i += 1
            langprob += prob / self.n_trial
        self.langprob = langprob.tolist()
