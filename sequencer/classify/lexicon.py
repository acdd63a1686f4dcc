"""The words and phrases the classifier reads, one data file per language (`lang/<code>.yaml`).

Owns: loading and validating those files once, and compiling each section into one plain
pattern over the lowered text. Adding a phrase or a language is adding a line or a file; a
broken file is an error naming the file, the line, what is wrong and how to fix it.

A file is a YAML mapping. Its keys are `language` (the file's code), `numeric_dates` (how the
language writes 02/01/2027: dmy, mdy, ymd, or any when both orders are in use, as in English,
so that only an unambiguous date is read) and sections. A section is either a list of phrases
or a table (a mapping of phrase to value). Modules that read a section declare it with
`section()` when imported, so a misspelt section name in a file is an error too.

A phrase is lower-case text, matched on word boundaries anywhere in the lowered message text,
any run of whitespace in it matching any run of whitespace. A phrase ending in `*` is a stem:
`abwesen*` matches "abwesend" and "abwesenheit". Scripts written without spaces (Japanese,
Chinese) get no word boundaries: `不在` matches inside "現在不在です". A phrase written between
slashes (`/remove (me|us)/`) is a regular expression instead, for the few cases a word list
cannot say.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

LANG_DIR = Path(str(resources.files("sequencer.classify") / "lang"))
_MAX_FILE = 512_000  # a phrase file is a few kilobytes; anything larger is not one
_ORDERS = frozenset({"dmy", "mdy", "ymd", "any"})  # any: both orders are in use
_RESERVED = frozenset({"language", "numeric_dates"})
_NAMED_OR_NUMBERED = re.compile(r"\(\?P|(?<!\\)(?:\\\\)*\\[1-9]")  # (?P<name>, (?P=name), \1


class LexiconError(ValueError):
    """A phrase file is broken: the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Section:
    name: str
    kind: Literal["phrases", "table"]
    about: str  # one line: what the phrases mean, shown in errors and the README's list


_SECTIONS: dict[str, Section] = {}


def section(name: str, kind: Literal["phrases", "table"], about: str) -> str:
    """Declare a section a module reads (at import time); returns its name."""
    known = _SECTIONS.get(name)
    if known is not None and known.kind != kind:
        raise ValueError(f"section {name!r} declared twice with different kinds")
    _SECTIONS[name] = Section(name, kind, about)
    return name


def sections() -> dict[str, Section]:
    return dict(_SECTIONS)


@dataclass(frozen=True)
class Language:
    code: str
    numeric_dates: str
    phrases: dict[str, tuple[str, ...]]
    tables: dict[str, dict[str, str]]


def _where(path: Path, node: Any, key: Any = None) -> str:
    """`file:line` of a mapping key or sequence item (ruamel keeps 0-based positions)."""
    line = None
    try:
        if key is not None and hasattr(node, "lc"):
            line = node.lc.key(key)[0] if isinstance(key, str) else node.lc.item(key)[0]
        elif hasattr(node, "lc"):
            line = node.lc.line
    except (KeyError, IndexError, TypeError):
        line = None
    return f"{path}:{line + 1}" if line is not None else str(path)


def _check_phrase(path: Path, node: Any, index: Any, phrase: Any, name: str) -> str:
    where = _where(path, node, index)
    if not isinstance(phrase, str) or not phrase.strip():
        raise LexiconError(f"{where}: an entry of {name!r} is not text; write a phrase in quotes")
    if len(phrase) > 300:
        raise LexiconError(f"{where}: phrase longer than 300 characters; shorten it")
    if phrase.startswith("/") and phrase.endswith("/") and len(phrase) > 2:
        if _NAMED_OR_NUMBERED.search(phrase):
            raise LexiconError(
                f"{where}: {phrase!r} names a group or refers back to one; a phrase is tried "
                "among many, so write groups as (...) and repeat the words instead"
            )
        try:
            re.compile(phrase[1:-1])
        except re.error as exc:
            raise LexiconError(
                f"{where}: {phrase!r} is not a valid regular expression ({exc}); "
                "fix it or write it as plain words without slashes"
            ) from None
        return phrase
    if "*" in phrase[:-1]:
        raise LexiconError(
            f"{where}: {phrase!r} has a '*' before its end; a stem ends in '*' (abwesen*), "
            "anything else needs a regular expression between slashes"
        )
    if phrase != phrase.lower():
        raise LexiconError(
            f"{where}: {phrase!r} has capitals, but text is lowered before matching; "
            f"write {phrase.lower()!r}"
        )
    return " ".join(phrase.split())


def parse(path: Path, text: str) -> Language:
    """Validate one language file; raises LexiconError naming the file and line."""
    if len(text) > _MAX_FILE:
        raise LexiconError(f"{path}: larger than {_MAX_FILE} bytes; is this a phrase file?")
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise LexiconError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}); "
            "check the indentation and quote phrases that contain ':' or '#'"
        ) from None
    if not isinstance(data, dict):
        raise LexiconError(f"{path}: expected a mapping of section names to phrases")
    code = data.get("language")
    if code != path.stem:
        raise LexiconError(
            f"{_where(path, data, 'language') if 'language' in data else path}: "
            f"`language` must be {path.stem!r}, the file's name"
        )
    order = data.get("numeric_dates", "dmy")
    if order not in _ORDERS:
        raise LexiconError(
            f"{_where(path, data, 'numeric_dates')}: numeric_dates must be one of "
            f"{', '.join(sorted(_ORDERS))}, not {order!r}"
        )
    phrases: dict[str, tuple[str, ...]] = {}
    tables: dict[str, dict[str, str]] = {}
    for name, value in data.items():
        if name in _RESERVED:
            continue
        where = _where(path, data, name)
        known = _SECTIONS.get(name)
        if known is None:
            raise LexiconError(
                f"{where}: unknown section {name!r}; known sections: {', '.join(sorted(_SECTIONS))}"
            )
        if known.kind == "phrases":
            if not isinstance(value, list):
                raise LexiconError(f"{where}: {name!r} must be a list of phrases (- phrase)")
            seen: dict[str, int] = {}
            items = []
            for i, phrase in enumerate(value):
                clean = _check_phrase(path, value, i, phrase, name)
                if clean in seen:
                    raise LexiconError(
                        f"{_where(path, value, i)}: {phrase!r} is listed twice in {name!r}; "
                        "remove one"
                    )
                seen[clean] = i
                items.append(clean)
            phrases[name] = tuple(items)
        else:
            if not isinstance(value, dict):
                raise LexiconError(f"{where}: {name!r} must be a table (phrase: value)")
            table: dict[str, str] = {}
            for key, item in value.items():
                clean = _check_phrase(path, value, key, key, name)
                if not isinstance(item, str | int) or isinstance(item, bool):
                    raise LexiconError(
                        f"{_where(path, value, key)}: the value of {key!r} must be text"
                    )
                table[clean] = str(item)
            tables[name] = table
    return Language(str(code), str(order), phrases, tables)


@functools.cache
def languages() -> dict[str, Language]:
    """Every language file, loaded and validated once per process."""
    found: dict[str, Language] = {}
    for path in sorted(LANG_DIR.glob("*.yaml")):
        found[path.stem] = parse(path, path.read_text(encoding="utf-8"))
    return found


def _unspaced(char: str) -> bool:
    """Whether `char` belongs to a script written without spaces between words (kana, CJK
    ideographs): there a word boundary would only match at the end of a sentence."""
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF


def _bounded(char: str) -> bool:
    return (char.isalnum() or char == "_") and not _unspaced(char)


def pattern_text(phrase: str) -> str:
    """The regular expression (as text) one phrase stands for, over lowered text."""
    if _is_regex(phrase):
        return f"(?:{phrase[1:-1]})"
    stem = phrase.endswith("*")
    if stem:
        phrase = phrase[:-1].rstrip()
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    start = r"\b" if _bounded(phrase[0]) else ""
    end = r"\w*" if stem else (r"\b" if _bounded(phrase[-1]) else "")
    return start + body + end


# A regular expression's source as tokens: an escape, a character class, a group opening, or
# one character. Enough to tell what a match of it begins with; nothing else is read.
_TOKEN = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]|\(\?:|\(\?|.", re.DOTALL)
_QUANTIFIERS = frozenset("?*+{")
_SPECIAL = frozenset(".^$*+?{}[]\\|()-")


def _alternatives(tokens: list[str]) -> list[list[str]]:
    """`tokens` split at each `|` outside any group."""
    parts: list[list[str]] = [[]]
    depth = 0
    for item in tokens:
        depth += item.startswith("(") - (item == ")")
        if item == "|" and depth == 0:
            parts.append([])
        else:
            parts[-1].append(item)
    return parts


def _chars(token: str) -> frozenset[str] | None:
    """The characters one token matches: a plain or escaped sign, or a class listing them."""
    if token.startswith("\\"):
        return frozenset(token[1]) if not token[1].isalnum() else None
    chars = token[1:-1] if token.startswith("[") and len(token) > 2 else token
    return None if _SPECIAL & set(chars) else frozenset(chars)


def _starts(tokens: list[str]) -> dict[str, list[str]] | None:
    """For each character a match of `tokens` can begin with, what may follow it (patterns, in
    the order the engine tries them); None when that cannot be told plainly. Read: a character
    or class, a group of alternatives (optional or not), then anything."""
    if not tokens:
        return None
    first, rest = tokens[0], tokens[1:]
    if first not in ("(", "(?:"):
        chars = _chars(first)
        if chars is None or (rest[:1] and rest[0] in _QUANTIFIERS):
            return None
        return {c: ["".join(rest)] for c in chars}
    depth, end = 0, 0
    for end, item in enumerate(tokens):  # noqa: B007  (end: where the group closes)
        depth += item.startswith("(") - (item == ")")
        if depth == 0:
            break
    if depth:
        return None
    inner, rest = tokens[1:end], tokens[end + 1 :]
    optional = rest[:1] == ["?"] and rest[1:2] != ["?"]  # greedy: tried first, skipped last
    rest = rest[1:] if optional else rest
    if rest[:1] and rest[0] in _QUANTIFIERS:
        return None
    found: dict[str, list[str]] = {}
    for alternative in _alternatives(inner) + ([[]] if optional else []):
        starts = _starts(alternative + rest)
        if starts is None:
            return None
        for char, after in starts.items():
            found.setdefault(char, []).extend(after)
    return found


def _filing(phrase: str) -> tuple[dict[str, str], bool] | None:
    """For each character a match of `phrase` can begin with, the pattern of the rest of the
    match; and whether it begins only at the start of a word. None when that cannot be told
    (the phrase is then tried at every position)."""
    if not _is_regex(phrase):
        source = pattern_text(phrase).removeprefix(r"\b")
        return {phrase[0]: source.removeprefix(re.escape(phrase[0]))}, _bounded(phrase[0])
    found: dict[str, list[str]] = {}
    alternatives = _alternatives(_TOKEN.findall(phrase[1:-1]))
    word = all(a[:1] == [r"\b"] for a in alternatives)
    for alternative in alternatives:
        bounded = alternative[:1] == [r"\b"]
        starts = _starts(alternative[1:] if bounded else alternative)
        if starts is None or (bounded and not all(map(_bounded, starts))):
            return None
        for char, after in starts.items():
            # \b before a letter: no letter before it, read once the letter is taken
            found.setdefault(char, []).extend(
                after if word or not bounded else [rf"(?<!\w.){a}" for a in after]
            )
    return {c: "(?:" + "|".join(after) + ")" for c, after in found.items()}, word


def _may_begin(phrase: str, char: str) -> bool:
    """Whether a phrase whose first characters cannot be listed may begin with `char`: told
    by its first item alone (`\\d`, `\\w`, a class) when that cannot match nothing."""
    tokens = _TOKEN.findall(phrase[1:-1])
    tokens = tokens[1:] if tokens[:1] == [r"\b"] else tokens
    zero_width = not tokens or tokens[0][0] in "(^$" or tokens[0] in (r"\A", r"\Z", r"\b", r"\B")
    alone = len(_alternatives(tokens)) == 1 and not zero_width
    if not alone or tokens[1:2] in (["?"], ["*"]) or tokens[1:3] in (["{", "0"], ["{", ","]):
        return True
    try:
        return re.fullmatch(tokens[0], char, re.IGNORECASE) is not None
    except re.error:  # a back-reference: cannot be read alone
        return True


def alternation(phrases: tuple[str, ...] | list[str]) -> str:
    r"""One group matching any of `phrases`, longest first (so a match is the fullest phrase
    at its position); "(?!)" (never matches) when there are none.

    Tried as one long list, a few hundred phrases cost a few hundred steps at every character
    of the text. So each phrase is filed under the characters it can begin with, and at a
    position only the phrases filed under its character are tried: those that begin a word
    (`\b(?:a(?:bout|fter)|b(?:...))`) only at the start of a word, the others (`不(?:在|...)`)
    anywhere. The engine passes over a group whose first character is not the text's in one
    step. A phrase whose first character cannot be told (a regular expression beginning with
    `.` or `\w`) is tried everywhere, and in its place in each group it may begin, so that at any
    position the phrases that can match there are tried in the order of the plain list
    `(?:p1|p2|...)`: the matches are the same."""
    every = sorted(dict.fromkeys(phrases), key=len, reverse=True)
    if not every:
        return "(?!)"
    filing = [(_filing(p), pattern_text(p)) for p in every]
    anywhere = [source for f, source in filing if f is None]

    def group(char: str, word: bool) -> str:
        chosen = [
            (f, s)
            for p, (f, s) in zip(every, filing, strict=True)
            if (f is None and _may_begin(p, char)) or (f and char in f[0] and (word or not f[1]))
        ]
        if all(f is not None for f, _ in chosen):  # the engine skips it by its first letter
            after = [f[0][char] for f, _ in chosen if f is not None]
            return f"{re.escape(char)}(?:{'|'.join(after)})"
        items = [s.removeprefix(r"\b") if word else s for _, s in chosen]
        return f"(?={re.escape(char)})(?:{'|'.join(items)})"

    words = dict.fromkeys(c for f, _ in filing if f and f[1] for c in f[0])
    chars = dict.fromkeys(c for f, _ in filing if f and not f[1] for c in f[0])
    parts = [rf"\b(?:{'|'.join(group(c, True) for c in words)})"] if words else []
    parts += [group(c, False) for c in chars]
    return "(?:" + "|".join(parts + anywhere) + ")"


@dataclass(frozen=True)
class Phrases:
    """One section across languages, compiled into one pattern over lowered text.

    A plain phrase can only match where its longest word occurs as it is written, so when
    none of those words is in the text (most texts, for most sections) only the phrases
    written as regular expressions are tried: a substring test is many times faster than a
    long alternation tried at every character.
    """

    name: str
    pattern: re.Pattern[str] | None
    by_language: dict[str, tuple[str, ...]]
    literals: tuple[str, ...] = ()  # each plain phrase's longest word
    regex_only: re.Pattern[str] | None = None  # the phrases written between slashes

    def _pattern_for(self, lowered: str) -> re.Pattern[str] | None:
        if any(literal in lowered for literal in self.literals):
            return self.pattern
        return self.regex_only  # no plain phrase can match: the same matches, sooner

    @property
    def every(self) -> tuple[str, ...]:
        """Every phrase of the section, across the chosen languages, without repeats."""
        return tuple(dict.fromkeys(p for items in self.by_language.values() for p in items))

    def search(self, lowered: str) -> re.Match[str] | None:
        pattern = self._pattern_for(lowered)
        return pattern.search(lowered) if pattern else None

    def finditer(self, lowered: str) -> Iterator[re.Match[str]]:
        pattern = self._pattern_for(lowered)
        return pattern.finditer(lowered) if pattern else iter(())

    def sub(self, repl: str, lowered: str) -> str:
        pattern = self._pattern_for(lowered)
        return pattern.sub(repl, lowered) if pattern else lowered


def phrases(name: str, *codes: str) -> Phrases:
    """The section `name` of the given languages (all of them when none is named).

    Compiled once per section and set of languages: the order the languages are named in
    does not change what matches, so ("de", "en") and ("en", "de") share one pattern."""
    return _phrases(name, tuple(sorted(set(codes))))


@functools.cache
def _phrases(name: str, codes: tuple[str, ...]) -> Phrases:
    if name not in _SECTIONS or _SECTIONS[name].kind != "phrases":
        raise KeyError(f"no phrase section {name!r} is declared")
    langs = languages()
    chosen = [langs[c] for c in codes if c in langs] if codes else list(langs.values())
    by_language = {lang.code: lang.phrases.get(name, ()) for lang in chosen}
    every = [p for items in by_language.values() for p in items]
    pattern = re.compile(alternation(every)) if every else None
    regexes = [p for p in every if _is_regex(p)]
    literals = {max(p.rstrip("*").split(), key=len) for p in every if not _is_regex(p)}
    regex_only = re.compile(alternation(regexes)) if regexes else None
    return Phrases(name, pattern, by_language, tuple(sorted(literals)), regex_only)


def _is_regex(phrase: str) -> bool:
    return phrase.startswith("/") and phrase.endswith("/") and len(phrase) > 2


def lower(text: str) -> str:
    """`text` lower-cased, one character for one, so that positions in the copy are positions
    in the original (the few characters whose lower case is longer, such as "İ", stay)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def merged_table(name: str) -> dict[str, str]:
    """The table section `name` of every language in one mapping; a phrase two languages
    give different values is an error (a month name must mean one month)."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for code, lang in sorted(languages().items()):
        for key, value in lang.tables.get(name, {}).items():
            if key in merged and merged[key] != value:
                raise LexiconError(
                    f"{LANG_DIR / (code + '.yaml')}: {key!r} in {name!r} is {value!r} here "
                    f"but {merged[key]!r} in {owner[key]}.yaml; make them agree"
                )
            merged[key] = value
            owner.setdefault(key, code)
    return merged


def table(name: str, code: str) -> dict[str, str]:
    """The table section `name` of one language ({} when that language has none)."""
    if name not in _SECTIONS or _SECTIONS[name].kind != "table":
        raise KeyError(f"no table section {name!r} is declared")
    lang = languages().get(code)
    return dict(lang.tables.get(name, {})) if lang else {}
