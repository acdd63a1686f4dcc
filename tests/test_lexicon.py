"""Phrase files: every shipped file loads, and a broken one is an error with file and line."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

import sequencer.classify  # noqa: F401  (declares the sections the files use)
from sequencer.classify import lexicon, parse

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


@functools.cache
def _texts() -> str:
    """The new text of every hand-written message (people's words in eight languages: where
    the phrases are meant to match), lowered, joined into one text: a phrase may also run
    across two of them, which the comparison reads just the same. (The whole corpus too was
    compared once when the filing was written: no difference; it is left out here because
    the plain reference is slow by nature.)"""
    files = sorted(Path("tests/mail").glob("*.eml"))
    texts = []
    for path in files:
        mail = parse.parse(path.read_bytes())
        texts.append(
            mail.new_lowered if mail else lexicon.lower(path.read_text("utf-8", "replace"))
        )
    return "\n\n".join(texts)


def _plain(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """What a section means: its phrases, longest first, tried in that order at each position."""
    every = sorted(dict.fromkeys(phrases), key=len, reverse=True)
    return re.compile("(?:" + "|".join(lexicon.pattern_text(p) for p in every) + ")")


_PHRASE_SECTIONS = sorted(
    name
    for name, declared in lexicon.sections().items()
    if declared.kind == "phrases" and not name.startswith("test_")
)


@pytest.mark.parametrize("name", _PHRASE_SECTIONS)
def test_every_section_finds_what_its_plain_list_of_phrases_finds(name: str) -> None:
    """Filing phrases by first letter (to try fewer at each word) must not change a match:
    the section of all languages and of each, and its regular expressions alone (what is
    searched when no plain phrase can occur), on the new text of every test message."""
    text = _texts()
    for codes in [(), *((code,) for code in lexicon.languages())]:
        every = lexicon.phrases(name, *codes).every
        regexes = tuple(p for p in every if p.startswith("/")) if not codes else ()
        for chosen in (every, regexes):
            if chosen:
                filed = re.compile(lexicon.alternation(chosen))
                want = [m.span() for m in _plain(chosen).finditer(text)]
                assert [m.span() for m in filed.finditer(text)] == want, codes


def test_the_comparison_reads_phrases_of_most_sections() -> None:
    """The texts hold matches of most sections: otherwise the comparison above proves little."""
    text = _texts()
    found = [n for n in _PHRASE_SECTIONS if lexicon.phrases(n).search(text)]
    assert len(found) >= 0.8 * len(_PHRASE_SECTIONS), set(_PHRASE_SECTIONS) - set(found)


@pytest.mark.parametrize(
    ("phrases", "text", "found"),
    [
        # regular expressions led by a word, a group or a class, among plain phrases
        (
            ("/\\b(remove|take) me\\b/", "take me off your mailing list"),
            "take me off your mailing list",
            "take me off your mailing list",
        ),
        (("/\\b(remove|take) me\\b/", "remove"), "remove me now", "remove me"),
        (("/\\b[ée]crivez/", "ecrire"), "n'écrivez plus", "écrivez"),
        (("/\\b(am |nächsten )?montag\\b/", "mon"), "am montag", "am montag"),
        (("/\\b(am |nächsten )?montag\\b/", "mon"), "bis montag", "montag"),
        # one that may begin inside a word is tried inside words too
        (("/stop (e-?mailing|writing)/", "stop"), "nonstop emailing", "stop emailing"),
        # one whose first letter cannot be told, longer than a plain phrase at the same place
        (("/\\w(me|nos)\\b/", "dame"), "dame", "dame"),
        (("/\\w+ly\\b/", "only"), "only", "only"),
        (("/\\d{1,2} ?h\\b/", "h"), "à 10h", "10h"),
        # unspaced scripts, and a regex beginning with one of their characters
        (("不在", "/配信(を)?(停止|解除)/"), "現在不在です。配信を停止", "不在"),
        (("/配信(を)?(停止|解除)/",), "メール配信停止", "配信停止"),
        (("/\\(cc\\)|\\bin cc\\b/", "cc"), "ana (cc) and bob in cc", "(cc)"),
    ],
)
def test_a_filed_phrase_matches_as_written(phrases: tuple[str, ...], text: str, found: str) -> None:
    filed = re.compile(lexicon.alternation(phrases))
    match = filed.search(text)
    assert match is not None
    assert match.group() == found
    assert [m.span() for m in filed.finditer(text)] == [
        m.span() for m in _plain(phrases).finditer(text)
    ]


def test_a_named_group_or_back_reference_is_an_error() -> None:
    for phrase in ("/(?P<who>me|us) off/", "/(me|us) and \\1/"):
        with pytest.raises(lexicon.LexiconError) as caught:
            lexicon.parse(Path("xx.yaml"), f"language: xx\ntest_greeting:\n  - '{phrase}'\n")
        assert "xx.yaml:3:" in str(caught.value)
        assert "group" in str(caught.value)
