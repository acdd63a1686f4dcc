"""Waits as sequence authors write them, and when a step falls due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.schedule import Wait, parse_wait

HINT = "use s, m, h, d, w, or bd for business days"

UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("0s", timedelta(0)),
        ("90m", timedelta(minutes=90)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("3 days", timedelta(days=3)),
        ("1 day", timedelta(days=1)),
        ("2 hours", timedelta(hours=2)),
        ("30 minutes", timedelta(minutes=30)),
        ("2 weeks", timedelta(weeks=2)),
        ("45 seconds", timedelta(seconds=45)),
        ("3D", timedelta(days=3)),
        ("  2h  ", timedelta(hours=2)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("520w", timedelta(weeks=520)),
    ],
)
def test_parse_wait_accepts(text: str, delta: timedelta) -> None:
    wait = parse_wait(text)
    assert wait.delta == delta
    assert str(wait) == text.strip()
    assert wait == Wait(delta, text.strip())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3", 'wait "3" has no unit (try "3d", "3bd" or "3h")'),
        (3, 'wait "3" has no unit (try "3d", "3bd" or "3h")'),
        (" 12 ", 'wait " 12 " has no unit (try "12d", "12bd" or "12h")'),
        (
            "3 dayz",
            'wait "3 dayz" has an unknown unit "dayz" (use s, m, h, d, w, or bd for business days)',
        ),
        (
            "2 hrs",
            'wait "2 hrs" has an unknown unit "hrs" (use s, m, h, d, w, or bd for business days)',
        ),
        ("5ms", 'wait "5ms" has an unknown unit "ms" (' + HINT + ")"),
        ("3ds", 'wait "3ds" has an unknown unit "ds" (' + HINT + ")"),
        ("", 'wait "" is not a duration (try "3d", "12h" or "3bd")'),
        ("   ", 'wait "   " is not a duration (try "3d", "12h" or "3bd")'),
        ("d3", 'wait "d3" is not a duration (try "3d", "12h" or "3bd")'),
        ("-1d", 'wait "-1d" is not a duration (try "3d", "12h" or "3bd")'),
        ("1.5d", 'wait "1.5d" is not a duration (try "3d", "12h" or "3bd")'),
        ("3d and 2h", 'wait "3d and 2h" is not a duration (try "3d", "12h" or "3bd")'),
        ("3d, 2h", 'wait "3d, 2h" is not a duration (try "3d", "12h" or "3bd")'),
        ("٣d", 'wait "٣d" is not a duration (try "3d", "12h" or "3bd")'),
        ("11000w", 'wait "11000w" is longer than ten years (use a shorter wait)'),
        ("9" * 30 + "d", "is longer than ten years"),
    ],
)
def test_parse_wait_refuses_with_a_hint(text: str | int, message: str) -> None:
    with pytest.raises(ValueError, match="wait") as info:
        parse_wait(text)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [True, False, None, 1.5, ["3d"]])
def test_parse_wait_refuses_values_that_are_not_text(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_wait(value)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=0, max_value=500), unit=st.sampled_from(sorted(UNITS)))
def test_number_and_unit_mean_n_times_the_unit(n: int, unit: str) -> None:
    assert parse_wait(f"{n}{unit}").delta == timedelta(seconds=n * UNITS[unit])
    assert parse_wait(f"{n} {unit}").delta == timedelta(seconds=n * UNITS[unit])
    assert parse_wait(f"{n}{unit.upper()}").delta == timedelta(seconds=n * UNITS[unit])


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.integers(0, 99), st.sampled_from(["w", "d", "h", "m", "s"])),
        min_size=1,
        max_size=5,
    )
)
def test_compound_waits_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_wait(text).delta == timedelta(seconds=sum(n * UNITS[u] for n, u in parts))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=12))
def test_parse_wait_only_ever_raises_value_error(text: str) -> None:
    try:
        wait = parse_wait(text)
    except ValueError as exc:
        message = str(exc)
    else:
        assert wait.delta >= timedelta(0)
        return
    assert message.startswith(f'wait "{text}" ')
    assert "(" in message  # every refusal carries a hint


def test_the_longest_wait_is_still_schedulable() -> None:
    far = datetime(2100, 1, 1, tzinfo=UTC) + parse_wait("3653d").minimum
    assert far.year == 2110
