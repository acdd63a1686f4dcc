"""YAML 1.2 loading with line numbers, shared by the settings file and sequence files.

ruamel.yaml keeps each key's position; we flatten the document to plain Python and keep a map
from each key path to its 1-based line, so pydantic's error locations become `file:line`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from sequencer.errors import where

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDoc:
    path: Path
    data: Any
    lines: dict[Loc, int]
    text: str = ""  # the source, for findings that point inside a value

    def line(self, loc: Loc) -> int | None:
        """The line of the deepest key along `loc` that the file has (1-based)."""
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                return self.lines[loc[:cut]]
        return None

    def at(self, loc: Loc) -> str:
        return where(self.path, self.line(loc))


def load(path: Path, error: Callable[[list[str]], Exception]) -> YamlDoc:
    """Read and parse `path`; raise `error([...])` with file:line on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error([f"{path}: cannot read it: {exc}"]) from None
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        start = exc.context_mark
        if exc.problem and exc.context and start is not None and start.line + 1 != line:
            # An unclosed bracket or quote is noticed lines later: say where it was opened.
            what += f" ({exc.context} that starts on line {start.line + 1})"
        raise error(
            [f"{where(path, line)}: not valid YAML: {what} (check indentation and quoting)"]
        ) from None
    except YAMLError as exc:
        raise error([f"{path}: not valid YAML: {exc}"]) from None
    lines: dict[Loc, int] = {(): 1}
    return YamlDoc(path, _plain(root, (), lines), lines, text)


def _plain(node: Any, loc: Loc, lines: dict[Loc, int]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            k = str(key) if not isinstance(key, (str, int)) else key
            lines[(*loc, k)] = _key_line(node, key)
            out[k] = _plain(value, (*loc, k), lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            lines[(*loc, i)] = node.lc.item(i)[0] + 1
            items.append(_plain(value, (*loc, i), lines))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _key_line(node: CommentedMap, key: Any) -> int:
    """The key's own line; a key merged in with `<<: *anchor` has none, so the mapping's."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except KeyError:
        return int(node.lc.line) + 1


def pydantic_problems(doc: YamlDoc, exc: ValidationError, prefix: Loc = ()) -> list[str]:
    """Turn pydantic's errors into `file:line: where: what` sentences."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in err["loc"] if isinstance(p, (str, int))))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}' (check its spelling; see the README for valid keys)"
        elif err["type"] == "missing":
            msg = f"required key '{loc[-1]}' is missing"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "string_type" and isinstance(err["input"], (bool, int, float, date)):
            # YAML read `2025`, `1.50`, `true` or `2024-06-12` as a number, boolean or date.
            value = str(err["input"]).lower() if isinstance(err["input"], bool) else err["input"]
            kind = (
                "true/false"
                if isinstance(err["input"], bool)
                else "a date"
                if isinstance(value, date)
                else "a number"
            )
            msg = (
                f"{msg}: YAML read {value} as {kind}; put it in quotes to keep it as "
                f'text, e.g. {loc[-1]}: "{value}"'
            )
        problems.append(f"{doc.at(loc)}: {dotted}: {msg}")
    return problems
