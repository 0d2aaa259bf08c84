"""Imported once by the worker pool's fork server: every worker forked from it starts with
trafilatura, resiliparse (the second opinion), numpy and the language profiles already
loaded, instead of spending
about a second of CPU on each of them per worker (and again after every replacement)."""

import pycld2  # noqa: F401  (the language's first opinion)
import resiliparse.extract.html2text
import resiliparse.parse.html  # noqa: F401
import trafilatura  # noqa: F401

from ingestor.analyze.fingerprint import fingerprint
from ingestor.analyze.language import detect_language

detect_language("", "warm up the language profiles")
fingerprint(" ".join(f"warm up word {n}" for n in range(40)))
