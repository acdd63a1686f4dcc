"""Which recipient addresses are accepted, and what the user is told about the others."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.addresses import domain_of, normalize_address


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("jo@acme.test", "jo@acme.test"),
        ("Jo.Smith@Acme.Example.COM", "jo.smith@acme.example.com"),
        ("  jo@acme.test\t", "jo@acme.test"),
        ("jo+sequences@acme.test", "jo+sequences@acme.test"),
        ("o'brien@acme.co.uk", "o'brien@acme.co.uk"),
        ("jo@mail-1.acme.test", "jo@mail-1.acme.test"),
        ("jo@acme.test.", "jo@acme.test"),
        ("x@a.io", "x@a.io"),
        ("a!#$%&'*+/=?^_`{|}~-b@acme.test", "a!#$%&'*+/=?^_`{|}~-b@acme.test"),
    ],
)
def test_good_addresses_are_lower_cased(raw: str, normal: str) -> None:
    assert normalize_address(raw) == normal


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("jo.acme.test", "'jo.acme.test' is not an e-mail address (it needs exactly one @)"),
        ("jo@x@acme.test", "'jo@x@acme.test' is not an e-mail address (it needs exactly one @)"),
        ("jo smith@acme.test", "'jo smith@acme.test' has an invalid part before the @"),
        ("jo@acme .test", "'jo@acme .test' has an invalid domain (expected something like"),
        ("@acme.test", "'@acme.test' has an invalid part before the @"),
        ("jo@", "'jo@' has an invalid domain"),
        (
            "jo@localhost",
            "'jo@localhost' has an invalid domain (expected something like example.com)",
        ),
        ("jo@.acme.test", "has an invalid domain"),
        ("jo@acme..test", "has an invalid domain"),
        ("jo@acme.test..", "has an invalid domain"),
        ("jo@-acme.test", "has an invalid domain"),
        ("jo@acme-.test", "has an invalid domain"),
        ("jo@acme_x.test", "has an invalid domain"),
        ("jo@10.0.0.1", "has an invalid domain"),
        ("jo@[10.0.0.1]", "has an invalid domain"),
        ("jo@" + "a" * 64 + ".test", "has an invalid domain"),
        ("jo@" + ".".join(["abcdefghi"] * 26) + ".test", "has an invalid domain"),
        (".jo@acme.test", "has an invalid part before the @"),
        ("jo.@acme.test", "has an invalid part before the @"),
        ("jo..smith@acme.test", "has an invalid part before the @"),
        ('"jo smith"@acme.test', "has an invalid part before the @"),
        ("Jo <jo@acme.test>", "has an invalid part before the @"),
        ("zoë@acme.test", "has an invalid part before the @"),
        ("jo@bücher.test", "has an invalid domain"),
        ("a" * 65 + "@acme.test", "has an invalid part before the @"),
        ("jo,ann@acme.test", "has an invalid part before the @"),
    ],
)
def test_bad_addresses_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        normalize_address(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "jo@acme.test\r\nBcc: victim@x.test",
        "jo@acme.test\n",
        "\rjo@acme.test",
        "jo\x00@acme.test",
    ],
)
def test_line_breaks_are_refused_as_header_injection(raw: str) -> None:
    with pytest.raises(ValueError, match=r"line break or NUL \(possible header injection\)"):
        normalize_address(raw)


def test_the_longest_local_part_is_accepted() -> None:
    assert normalize_address("a" * 64 + "@acme.test") == "a" * 64 + "@acme.test"


def test_domain_of() -> None:
    assert domain_of("jo@acme.test") == "acme.test"
    assert domain_of(normalize_address("Jo@ACME.test")) == "acme.test"


_LOCAL_CHARS = st.sampled_from(list("abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"))
_LABEL = st.text(
    st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")),
    min_size=1,
    max_size=12,
)
_GOOD = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    st.lists(st.text(_LOCAL_CHARS, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(_LABEL, min_size=1, max_size=3),
    st.text(st.sampled_from(list("abcdefghijklmnopqrstuvwxyz")), min_size=2, max_size=6),
)


@settings(max_examples=200, deadline=None)
@given(address=_GOOD)
def test_generated_good_addresses_are_accepted_and_lower_cased(address: str) -> None:
    assert normalize_address(address) == address.lower()


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(_GOOD, st.text(max_size=30), _GOOD.map(lambda a: f" {a.upper()}. ")))
def test_normalizing_is_idempotent(raw: str) -> None:
    try:
        once = normalize_address(raw)
    except ValueError:
        return
    assert normalize_address(once) == once
    assert once == once.lower()
    assert once == once.strip()
    assert once.count("@") == 1
    assert not any(c in once for c in "\r\n\0 ")
    assert once.isascii()
