"""Phrase files: every shipped file loads, and a broken one is an error with file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sequencer.classify import lexicon

SECTION = lexicon.section("test_greeting", "phrases", "test only: greetings")
TABLE = lexicon.section("test_table", "table", "test only: a table")


def test_every_shipped_language_file_loads() -> None:
    langs = lexicon.languages()
    assert {"en", "de", "fr", "es", "it", "nl", "pt", "ja"} <= set(langs)


def test_a_phrase_matches_on_word_boundaries_and_any_whitespace() -> None:
    lang = lexicon.parse(Path("xx.yaml"), "language: xx\ntest_greeting:\n  - good  morning\n")
    assert lang.phrases[SECTION] == ("good morning",)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("language: xx\ntest_greeting:\n  - Hello\n", 3, "capitals"),
        ("language: xx\ntest_greeting:\n  - hello\n  - hello\n", 4, "listed twice"),
        ("language: xx\ntest_greetin:\n  - hello\n", 2, "unknown section"),
        ("language: xx\ntest_greeting:\n  - '/(unclosed/'\n", 3, "regular expression"),
        ("language: xx\ntest_greeting: hello\n", 2, "list of phrases"),
        ("language: xx\ntest_table:\n  - a\n", 2, "table"),
        ("language: xx\nnumeric_dates: dym\n", 2, "numeric_dates"),
        ("language: yy\n", 1, "must be 'xx'"),
        ("language: xx\ntest_greeting:\n  - hello\n bad: [\n", 4, "not valid YAML"),
    ],
)
def test_a_broken_file_names_file_line_and_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(lexicon.LexiconError) as caught:
        lexicon.parse(Path("xx.yaml"), text)
    assert f"xx.yaml:{line}:" in str(caught.value)
    assert words in str(caught.value)


def test_every_section_of_every_shipped_file_compiles_and_tables_agree() -> None:
    """What the classifier reads at its first message: a phrase that does not compile, or a
    month two languages number differently, fails here rather than in the daemon."""
    import sequencer.classify  # noqa: F401  (declares the sections the files use)

    declared = lexicon.sections()
    for lang in lexicon.languages().values():
        assert set(lang.phrases) | set(lang.tables) <= set(declared), lang.code
    for name, declared_section in declared.items():
        if name.startswith("test_"):
            continue
        if declared_section.kind == "phrases":
            lexicon.phrases(name)
        else:
            lexicon.merged_table(name)


def test_a_stem_matches_longer_words_and_unspaced_scripts_need_no_boundary() -> None:
    lang = lexicon.parse(Path("xx.yaml"), "language: xx\ntest_greeting:\n  - abwesen*\n  - 不在\n")
    pattern = lexicon.alternation(lang.phrases[SECTION])
    assert re.search(pattern, "ich bin abwesend bis montag")
    assert not re.search(pattern, "anwesend")
    assert re.search(pattern, "現在不在です")


def test_a_star_inside_a_phrase_is_an_error() -> None:
    with pytest.raises(lexicon.LexiconError) as caught:
        lexicon.parse(Path("xx.yaml"), "language: xx\ntest_greeting:\n  - ab*wesend\n")
    assert "xx.yaml:3:" in str(caught.value)
    assert "stem" in str(caught.value)
