"""Titles, dates, authors and images on the snippet dev set's pages: the workers' metadata
(`extract_page` with trafilatura's metadata pass) beside trafilatura's own.

    python bench/extraction_metadata.py [--limit N]

The set has no metadata ground truth, so a title is counted right when it equals the
page's own headline (its first <h1>, whitespace folded); dates, authors and images are
counted as present.
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingestor.analyze.extract import extract_page  # noqa: E402
from ingestor.analyze.headmeta import first_heading  # noqa: E402

SNIPPETS = ROOT.parent / "shared" / "devsets" / "trafilatura-eval.jsonl.xz"
_SPACE = re.compile(r"\s+")


def _same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and _SPACE.sub(" ", a).strip() == _SPACE.sub(" ", b or "").strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    from trafilatura import bare_extraction

    counts = {k: [0, 0] for k in ("title = headline", "date", "authors", "image")}
    pages = with_h1 = 0
    with lzma.open(SNIPPETS, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line) if line.strip() else {}
            if "html" not in doc:
                continue
            html, url = doc["html"], doc["url"]
            _, _, meta = extract_page(html, url)
            theirs = bare_extraction(html, url=url, with_metadata=True)
            data = theirs.as_dict() if theirs is not None else {}
            headline = first_heading(html)
            pages += 1
            with_h1 += bool(headline)
            ours = (_same(meta.title, headline), meta.date, meta.authors, meta.image)
            traf = (_same(data.get("title"), headline), data.get("date"), data.get("author"))
            traf += (data.get("image"),)
            for key, mine, other in zip(counts, ours, traf, strict=True):
                counts[key][0] += bool(mine)
                counts[key][1] += bool(other)
            if args.limit and pages >= args.limit:
                break
    print(f"{pages} pages, {with_h1} with an <h1>")
    print("| field | workers | trafilatura |")
    print("|---|---|---|")
    for key, (mine, other) in counts.items():
        print(f"| {key} | {mine} ({mine / pages:.1%}) | {other} ({other / pages:.1%}) |")


if __name__ == "__main__":
    main()
