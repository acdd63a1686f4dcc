"""YAML 1.2 loading with line numbers, shared by the settings file and sequence files.

ruamel.yaml keeps each key's position; we flatten the document to plain Python and keep a map
from each key path to its 1-based line, so pydantic's error locations become `file:line`.

Hostile input is bounded while it is composed, before anything is expanded: the file's size,
the nesting depth, and the number of values the document would hold once every alias is
expanded (a "billion laughs" file is a few hundred bytes that expand to 10**9 values), are
capped, and only the plain core tags are accepted (no `!!python/...`, `!!binary`, `!custom`).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import Node, ScalarNode
from ruamel.yaml.reader import ReaderError

from sequencer import safetext
from sequencer.errors import where

Loc = tuple[str | int, ...]

#: A settings or sequence file is a few KB (twenty steps of long emails are ~100 KB); 1 MiB
#: is ten times that and still scans in a fraction of a second.
MAX_BYTES = 1 << 20
#: Values in the document once every alias is expanded. A long sequence holds a few hundred;
#: a settings file about 25 a mailbox (a team of 500 mailboxes: 12,500). This bounds the work
#: of everything downstream, alias bombs included.
MAX_NODES = 100_000
#: Nesting of mappings and sequences. Real files nest at most five deep (mailboxes, smtp,
#: ...); the bound keeps the composer's recursion and ours far from Python's limit.
MAX_DEPTH = 50

_CORE = "tag:yaml.org,2002:"
#: The explicit tags allowed, per kind of node: the plain core types and `!` (non-specific).
_TAGS: dict[type, frozenset[str]] = {
    ScalarEvent: frozenset({"!", *(_CORE + t for t in ("str", "int", "float", "bool", "null"))}),
    MappingStartEvent: frozenset({"!", _CORE + "map"}),
}
_SEQ_TAGS = frozenset({"!", _CORE + "seq"})


class _Refused(MarkedYAMLError):
    """A document refused for its shape (size, depth, aliases, tags), with its position."""


class _BoundedComposer(Composer):
    """ruamel's composer, counting as it goes.

    Aliases are not copied while composing (an alias is the anchored node itself), so the
    count is the size the document would have if expanded: every new node adds one, every
    alias adds the expanded size of its anchor, recorded when that node was finished. A bomb
    is refused at the first alias that crosses the bound, after reading only a few lines.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.expanded = 0
        self.nesting = 0
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size, once it is finished

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            anchored = super().compose_node(parent, index)
            size = self.sizes.get(id(anchored))
            if size is None:
                raise _Refused(
                    None,
                    None,
                    f"alias *{event.anchor} is used inside its own anchor (a loop); "
                    "write the value out instead",
                    event.start_mark,
                )
            self._count(size, event)
            return anchored
        assert isinstance(event, NodeEvent)
        self._check_tag(event)
        if event.anchor is not None and event.anchor in self.anchors:
            # YAML lets a later anchor replace an earlier one; ruamel only warns. Which value
            # an alias then means is a trap for the reader: refuse it.
            first = self.anchors[event.anchor].start_mark
            raise _Refused(
                None,
                None,
                f"anchor &{event.anchor} is defined twice (first on line {first.line + 1}); "
                "rename one of them",
                event.start_mark,
            )
        collection = isinstance(event, CollectionStartEvent)
        if collection:
            self.nesting += 1
            if self.nesting > MAX_DEPTH:
                raise _Refused(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep; flatten the structure",
                    event.start_mark,
                )
        start = self.expanded
        self._count(1, event)
        node: Node = super().compose_node(parent, index)
        self.sizes[id(node)] = self.expanded - start
        if collection:
            self.nesting -= 1
        return node

    def _count(self, size: int, event: NodeEvent) -> None:
        self.expanded += size
        if self.expanded > MAX_NODES:
            what = f"the document expands to more than {MAX_NODES} values"
            if isinstance(event, AliasEvent):
                what += f" through its aliases (here *{event.anchor}); remove the aliases"
            else:
                what += "; split it into smaller files"
            raise _Refused(
                None,
                None,
                what + " (a settings or sequence file holds a few hundred)",
                event.start_mark,
            )

    def _check_tag(self, event: NodeEvent) -> None:
        tag = getattr(event, "ctag", None)
        if tag is None:
            return
        allowed = _TAGS.get(type(event), _SEQ_TAGS)
        if str(tag) not in allowed:
            raise _Refused(
                None,
                None,
                f"the tag {_show_tag(tag)} is not allowed (only plain values, lists and "
                "mappings; remove the tag, or put the value in quotes to keep it as text)",
                event.start_mark,
            )


class _StrictConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, with a scalar it cannot convert reported at its line.

    `1` followed by 5000 digits, `2024-13-45` or `!!int abc` raise a bare ValueError (or
    KeyError) inside ruamel, with no position.
    """

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        if not isinstance(node, ScalarNode):
            return super().construct_non_recursive_object(node, tag)
        try:
            return super().construct_non_recursive_object(node, tag)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
            kind = str(tag or node.tag).removeprefix(_CORE)
            text = ascii(str(node.value))[1:-1]
            text = text if len(text) <= 40 else text[:37] + "..."
            raise _Refused(
                None,
                None,
                f"cannot read '{text}' as {kind} ({type(exc).__name__}: {str(exc)[:80]}); "
                "put it in quotes to keep it as text",
                node.start_mark,
            ) from None


def _show_tag(tag: Any) -> str:
    """The tag as written (`!!python/object/apply:os.system`), not its expanded URI."""
    handle, suffix = getattr(tag, "handle", None), getattr(tag, "suffix", None)
    text = f"{handle or ''}{suffix or ''}" if suffix else str(tag)
    return ascii(text)[1:-1][:80]


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
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more: the file may be endless (/dev/zero)
        if len(raw) > MAX_BYTES:
            size = f"{MAX_BYTES >> 20} MiB"
            raise error([f"{path}: larger than {size}; a settings or sequence file is a few KB"])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise error([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error([f"{path}: cannot read it: {exc}"]) from None
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _StrictConstructor
    try:
        root = yaml.load(text)
    except _Refused as exc:
        mark = exc.problem_mark
        raise error([f"{where(path, mark.line + 1 if mark else None)}: {exc.problem}"]) from None
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
    except ReaderError as exc:  # a character YAML forbids anywhere in a file
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        raise error(
            [f"{where(path, line)}: not valid YAML: {what} ({exc.reason}); remove it"]
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
    if isinstance(node, TaggedScalar):  # `!!str 5`: the only tag that arrives as one
        return str(node.value)
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


def unsafe_text(doc: YamlDoc, allow: Callable[[Loc], str] = lambda loc: "") -> list[str]:
    """`file:line: where: what` for every key and text value holding a character that cannot
    go into an email (line breaks, control characters, lone surrogates: see safetext).

    `allow(loc)` names the characters the value at `loc` may hold (a body keeps its line
    breaks). YAML's escapes ("\\x07", "\\ud800") make any of them easy to write.
    """
    problems: list[str] = []

    def walk(node: Any, loc: Loc) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and (bad := safetext.problem(key)):
                    problems.append(f"{doc.at((*loc, key))}: {_dotted((*loc, key))}: key {bad}")
                    continue
                walk(value, (*loc, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, (*loc, i))
        elif isinstance(node, str) and (bad := safetext.problem(node, allow=allow(loc))):
            problems.append(f"{doc.at(loc)}: {_dotted(loc)}: {bad}")

    walk(doc.data, ())
    return problems


def _dotted(loc: Loc) -> str:
    """`mailboxes.sales.smtp`, with a key that holds a control character escaped."""
    return ".".join(
        ascii(p)[1:-1] if isinstance(p, str) and safetext.problem(p) else str(p) for p in loc
    )


def _optional_of(tp: Any) -> Any:
    """X for `X | None`; anything else as it is."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _model_at(model: type[BaseModel], path: Loc) -> type[BaseModel] | None:
    """The model that validates the mapping at `path` under `model` (map keys and list
    indexes stepped over), or None where the path leaves the models."""
    current: Any = model
    for part in path:
        current = _optional_of(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin in (list, tuple):
            current = typing.get_args(current)[0]
        else:
            return None
    current = _optional_of(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(key: str, model: type[BaseModel] | None, path: Loc) -> str:
    """`unknown key 'daly_limit' (did you mean 'daily_limit'?)`: the closest key allowed at
    that level, since a misspelt setting would otherwise be ignored or refused unexplained."""
    at = _model_at(model, path) if model is not None else None
    close = difflib.get_close_matches(key, sorted(at.model_fields), n=1) if at else []
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (check its spelling; see the README for valid keys)"


def pydantic_problems(
    doc: YamlDoc, exc: ValidationError, prefix: Loc = (), model: type[BaseModel] | None = None
) -> list[str]:
    """Turn pydantic's errors into `file:line: where: what` sentences; with the `model`
    validated, an unknown key gets the closest allowed key at its level."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in err["loc"] if isinstance(p, (str, int))))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(str(loc[-1]), model, loc[len(prefix) : -1])
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
