"""What the watcher reads out of IMAP responses."""

from sequencer.inbox import search_uids as _uids


def test_search_result_is_read_and_untagged_counts_are_not() -> None:
    # pymap announces new mail inside other commands' responses: "3 EXISTS" is not UID 3.
    lines = [b"3 EXISTS", b"1 RECENT", b"101 102", b"UID SEARCH completed."]
    assert _uids(lines) == [101, 102]


def test_empty_search_result() -> None:
    assert _uids([b"", b"UID SEARCH completed."]) == []


def test_imap_dates_are_english_whatever_the_locale() -> None:
    from datetime import datetime

    from sequencer.inbox import _imap_date

    assert [_imap_date(datetime(2026, m, 7)) for m in (1, 3, 12)] == [
        "7-Jan-2026",
        "7-Mar-2026",
        "7-Dec-2026",
    ]
