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
any run of whitespace in it matching any run of whitespace. A phrase written between slashes
(`/remove (me|us)/`) is a regular expression instead, for the few cases a word list cannot say.
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
        try:
            re.compile(phrase[1:-1])
        except re.error as exc:
            raise LexiconError(
                f"{where}: {phrase!r} is not a valid regular expression ({exc}); "
                "fix it or write it as plain words without slashes"
            ) from None
        return phrase
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
                f"{where}: unknown section {name!r}; known sections: "
                f"{', '.join(sorted(_SECTIONS))}"
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


def _pattern(phrase: str) -> str:
    if phrase.startswith("/") and phrase.endswith("/") and len(phrase) > 2:
        return f"(?:{phrase[1:-1]})"
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    start = r"\b" if phrase[0].isalnum() or phrase[0] == "_" else ""
    end = r"\b" if phrase[-1].isalnum() or phrase[-1] == "_" else ""
    return start + body + end


@dataclass(frozen=True)
class Phrases:
    """One section across languages, compiled into one pattern over lowered text."""

    name: str
    pattern: re.Pattern[str] | None
    by_language: dict[str, tuple[str, ...]]

    def search(self, lowered: str) -> re.Match[str] | None:
        return self.pattern.search(lowered) if self.pattern else None

    def finditer(self, lowered: str) -> Iterator[re.Match[str]]:
        return self.pattern.finditer(lowered) if self.pattern else iter(())


@functools.cache
def phrases(name: str, *codes: str) -> Phrases:
    """The section `name` of the given languages (all of them when none is named)."""
    if name not in _SECTIONS or _SECTIONS[name].kind != "phrases":
        raise KeyError(f"no phrase section {name!r} is declared")
    langs = languages()
    chosen = [langs[c] for c in codes if c in langs] if codes else list(langs.values())
    by_language = {lang.code: lang.phrases.get(name, ()) for lang in chosen}
    # Longest first, so the alternation reports the fullest phrase at a position.
    every = sorted({p for items in by_language.values() for p in items}, key=len, reverse=True)
    pattern = re.compile("|".join(_pattern(p) for p in every)) if every else None
    return Phrases(name, pattern, by_language)


def table(name: str, code: str) -> dict[str, str]:
    """The table section `name` of one language ({} when that language has none)."""
    if name not in _SECTIONS or _SECTIONS[name].kind != "table":
        raise KeyError(f"no table section {name!r} is declared")
    lang = languages().get(code)
    return dict(lang.tables.get(name, {})) if lang else {}
