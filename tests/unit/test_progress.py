"""The progress of the commands: backfill counts documents done; the line's rate and ETA."""

from __future__ import annotations

from types import SimpleNamespace

from es_embed.cli.backfill import totals
from es_embed.cli.progress import render
from es_embed.follow.feed import Progress


def test_every_outcome_counts_as_done_and_reading_does_not() -> None:
    p = Progress(checked=99, embedded=1, skipped=2, conflicts=3, failed=4, cleared=5)
    assert p.done == 15


def test_backfill_line_counts_done_against_the_total_with_an_eta() -> None:
    # A backlog under a few pages is read at once: read == total while embedding goes on.
    read_all = Progress(checked=768, embedded=100, skipped=20, total=768)
    line = render("done", elapsed=10.0, **totals([SimpleNamespace(progress=read_all)]))  # type: ignore[list-item]
    assert line == (
        "done 120/768 (15%) read 768 embedded 100 skipped 20 conflicts 0 failed 0 cleared 0 "
        "12 docs/s ETA 0:54"
    )


def test_backfill_totals_sum_indices_and_need_every_total() -> None:
    a = SimpleNamespace(progress=Progress(checked=5, embedded=4, failed=1, total=10))
    b = SimpleNamespace(progress=Progress(checked=3, skipped=3, total=3))
    both = totals([a, b])  # type: ignore[list-item]
    assert (both["done"], both["total"], both["read"]) == (8, 13, 8)
    b.progress.total = None  # still counting that index's backlog
    assert totals([a, b])["total"] is None  # type: ignore[list-item]
