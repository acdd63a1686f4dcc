"""Pure sequence loading and validation: YAML files in, frozen Sequence objects out.

Owns: the sequence file format, its structural rules (a subject on the first step only, a
break-up as the last step and only there) and the template rules (only declared variables).
Every problem is reported at once, each with file, line and step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sequencer import render
from sequencer.errors import EnrollError, SequenceError, TemplateError
from sequencer.schedule import Wait, Window, WindowModel, parse_wait
from sequencer.yamlfile import Loc, YamlDoc, load, pydantic_problems, unsafe_text

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR = re.compile(r"^[a-z_][a-z0-9_]*$")


class StepModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    wait: str
    subject: str | None = None
    body: str
    breakup: bool = False

    @field_validator("wait", mode="before")
    @classmethod
    def _wait(cls, v: Any) -> str:
        parse_wait(v)
        return str(v)


class EnrollModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enroll: str

    @field_validator("enroll")
    @classmethod
    def _target(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"'{v}' is not a sequence id (a file name in the sequences folder)")
        return v


class OnReplyModel(BaseModel):
    """`on_reply: {not_now: {enroll: SEQ}, referral: {enroll: SEQ}}`: what a human reply
    may start, besides stopping the sequence (which it always does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    not_now: EnrollModel | None = None
    referral: EnrollModel | None = None


class SequenceModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mailbox: str
    window: WindowModel | None = None
    variables: dict[str, str | None] = Field(default_factory=dict)
    steps: list[StepModel] = Field(min_length=1)
    on_reply: OnReplyModel | None = None

    @field_validator("variables")
    @classmethod
    def _vars(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name in v:
            if not _VAR.match(name):
                raise ValueError(
                    f"variable name '{name}' must be lower-case letters, digits and _ "
                    "(it becomes contact.<name> in templates)"
                )
            if name == "email":
                raise ValueError("'email' is always present; do not declare it")
        return v


@dataclass(frozen=True)
class Step:
    number: int  # 1-based
    wait: Wait
    subject: str | None
    body: str
    breakup: bool
    line: int | None
    body_line: int | None = None  # where the body's text starts, for findings inside it


@dataclass(frozen=True)
class OnReply:
    """Sequences a human reply may enroll someone in (ids), with the lines that name them."""

    not_now: str | None = None  # the replier, from the day they named
    referral: str | None = None  # each colleague they point to
    not_now_line: int | None = None
    referral_line: int | None = None

    def targets(self) -> list[tuple[str, str, int | None]]:
        """(intent, target sequence id, line) for each action set."""
        found = [("not_now", self.not_now, self.not_now_line)]
        found.append(("referral", self.referral, self.referral_line))
        return [(k, t, line) for k, t, line in found if t is not None]


@dataclass(frozen=True)
class Sequence:
    id: str
    path: Path
    mailbox: str
    variables: Mapping[str, str | None]
    steps: tuple[Step, ...]
    fields_used: frozenset[str]  # contact fields any template reads
    window: Window | None = None  # None: the settings' default window applies
    # Read only under a fallback (`| default(...)`, `is defined`): a contact may lack them.
    fields_optional: frozenset[str] = frozenset()
    on_reply: OnReply = OnReply()

    @property
    def required_fields(self) -> frozenset[str]:
        """Every contact must have these: read somewhere without a fallback, or declared
        null and never read (a fallback in every read makes even a null field optional)."""
        declared = {k for k, v in self.variables.items() if v is None}
        return frozenset((self.fields_used | declared) - self.fields_optional)

    def contact_values(self, email: str, given: Mapping[str, str]) -> dict[str, str]:
        """The values the templates will see: given fields over declared defaults.

        Raises EnrollError naming every required field that is missing or blank.
        """
        values: dict[str, str] = {k: v for k, v in self.variables.items() if v is not None}
        values.update({k: v for k, v in given.items() if v is not None and v.strip()})
        values["email"] = email
        missing = sorted(name for name in self.required_fields if not values.get(name, "").strip())
        if missing:
            raise EnrollError(
                [
                    f"missing {', '.join(missing)} (sequence '{self.id}' needs "
                    f"{'it' if len(missing) == 1 else 'them'}; pass --var {missing[0]}=... "
                    f"or add a CSV column, or give a default under variables: in {self.path.name})"
                ]
            )
        return values


def weekend_only(window: Window) -> bool:
    return window.days <= {5, 6}


def load_sequence(path: Path, mailboxes: Iterable[str] | None = None) -> Sequence:
    doc = load(path, SequenceError)
    return sequence_from(doc, mailboxes)


def sequence_from(doc: YamlDoc, mailboxes: Iterable[str] | None = None) -> Sequence:
    path = doc.path
    seq_id = path.name.removesuffix(".yaml")
    problems: list[str] = []
    if not _ID.match(seq_id):
        problems.append(
            f"{path}: the file name '{path.name}' is not a usable sequence id "
            "(use letters, digits, '-', '_' and '.')"
        )
    if not isinstance(doc.data, dict):
        raise SequenceError(
            [f"{doc.at(())}: a sequence file must be a mapping with 'mailbox' and 'steps'"]
        )
    unsafe = unsafe_text(doc, _allowed)
    if unsafe:
        raise SequenceError(problems + unsafe)
    try:
        model = SequenceModel.model_validate(doc.data)
    except ValidationError as exc:
        raise SequenceError(problems + pydantic_problems(doc, exc, model=SequenceModel)) from None

    boxes = set(mailboxes) if mailboxes is not None else None
    if boxes is not None and model.mailbox not in boxes:
        known = ", ".join(sorted(boxes)) or "none are configured"
        problems.append(
            f"{doc.at(('mailbox',))}: unknown mailbox '{model.mailbox}' "
            f"(the settings file defines: {known})"
        )

    window = model.window.window() if model.window else None
    if window is not None and weekend_only(window):
        for i, st in enumerate(model.steps, start=1):
            if parse_wait(st.wait).business_days:
                problems.append(
                    f"{doc.at(('steps', i - 1, 'wait'))}: step {i}: a wait in business days "
                    f"can never land in a window open only at weekends ({window}); add a "
                    "weekday to the window or give the wait in days"
                )

    allowed = render.BUILTIN_FIELDS | set(model.variables)
    used: set[str] = set()
    bare: set[str] = set()  # read at least once without a fallback
    steps: list[Step] = []
    last = len(model.steps)
    for i, st in enumerate(model.steps, start=1):
        loc: tuple[str | int, ...] = ("steps", i - 1)
        at = doc.at(loc)
        if i == 1 and not (st.subject and st.subject.strip()):
            problems.append(f"{at}: step 1: needs a subject (later steps reuse it as 'Re: ...')")
        if i > 1 and st.subject is not None:
            problems.append(
                f"{doc.at((*loc, 'subject'))}: step {i}: remove 'subject': later "
                "steps are sent as 'Re: <first subject>' in the same thread"
            )
        if st.breakup and i != last:
            problems.append(
                f"{doc.at((*loc, 'breakup'))}: step {i}: the break-up must be the "
                "last step; move it to the end or remove the steps after it"
            )
        if i == last and not st.breakup:
            problems.append(
                f"{at}: step {i}: the last step must be the break-up: add "
                "'breakup: true' to a short, polite last email that lets them go"
            )
        for part in ("subject", "body"):
            source = getattr(st, part)
            if source is None:
                continue
            part_at = doc.at((*loc, part))
            try:
                use = render.analyse(source)
            except TemplateError as exc:
                problems.append(f"{part_at}: step {i}: {part}: {exc}")
                continue
            for name in sorted(use.unknown_names):
                problems.append(
                    f"{part_at}: step {i}: {part}: unknown name '{name}' (use "
                    f"contact.<field> or sender.name / sender.address)"
                )
            for field in sorted(use.contact_fields - allowed):
                problems.append(
                    f"{part_at}: step {i}: {part}: contact.{field} is not declared; "
                    f"add '{field}:' under variables: (with a default, or null "
                    "if every contact must have it)"
                )
            for field in sorted(use.sender_fields - render.SENDER_FIELDS):
                problems.append(
                    f"{part_at}: step {i}: {part}: sender.{field} does not exist "
                    "(use sender.name or sender.address)"
                )
            if use.dynamic_access:
                problems.append(
                    f"{part_at}: step {i}: {part}: contact[...] with a computed key "
                    "cannot be checked; use contact.<field>"
                )
            used |= use.contact_fields & allowed
            bare |= (use.contact_fields - use.defaulted_fields) & allowed
        steps.append(
            Step(
                i,
                parse_wait(st.wait),
                st.subject,
                st.body,
                st.breakup,
                doc.line(loc),
                _body_line(doc, (*loc, "body")),
            )
        )
    if problems:
        raise SequenceError(problems)
    on_reply = OnReply()
    if model.on_reply is not None:
        rules = model.on_reply
        on_reply = OnReply(
            rules.not_now.enroll if rules.not_now else None,
            rules.referral.enroll if rules.referral else None,
            doc.line(("on_reply", "not_now", "enroll")),
            doc.line(("on_reply", "referral", "enroll")),
        )
    return Sequence(
        seq_id,
        path,
        model.mailbox,
        dict(model.variables),
        tuple(steps),
        frozenset(used),
        window,
        frozenset(used - bare),
        on_reply,
    )


def _allowed(loc: Loc) -> str:
    """Besides printable text, a body may hold tabs and line breaks, and a subject or a
    variable's default (which may end up in the subject) a tab; nothing else may."""
    if len(loc) == 3 and loc[0] == "steps" and loc[2] == "body":
        return render.BODY_ALLOWED
    if (len(loc) == 3 and loc[0] == "steps" and loc[2] == "subject") or loc[:1] == ("variables",):
        return "\t"
    return ""


def _body_line(doc: YamlDoc, loc: tuple[str | int, ...]) -> int | None:
    """The first line of a body's text: a block scalar (`body: |`) starts on the next line."""
    line = doc.line(loc)
    if line is None:
        return None
    source = doc.text.splitlines()
    here = source[line - 1] if 0 < line <= len(source) else ""
    after_key = here.split("body:", 1)[-1].strip()
    return line + 1 if after_key[:1] in ("|", ">") else line


def load_all(folder: Path, mailboxes: Iterable[str] | None = None) -> dict[str, Sequence]:
    """Every `*.yaml` in `folder`, validated together; all problems are raised at once."""
    found, broken = load_each(folder, mailboxes)
    problems = [p for problems in broken.values() for p in problems]
    problems += missing_targets(found, set(found) | set(broken))
    if problems:
        raise SequenceError(problems)
    return found


def missing_targets(seqs: Mapping[str, Sequence], present: Iterable[str]) -> list[str]:
    """`on_reply` actions naming a sequence that has no file (a file that is there but broken
    reports its own problems). The daemon, meanwhile, puts such a reply on the agenda."""
    known = set(present)
    problems = []
    for seq in sorted(seqs.values(), key=lambda s: s.id):
        for intent, target, line in seq.on_reply.targets():
            if target not in known:
                problems.append(
                    f"{seq.path}:{line}: on_reply.{intent}.enroll: no sequence '{target}' "
                    f"(create {target}.yaml in {seq.path.parent}, or name one of: "
                    f"{', '.join(sorted(known)) or 'none'})"
                )
    return problems


def load_each(
    folder: Path, mailboxes: Iterable[str] | None = None
) -> tuple[dict[str, Sequence], dict[str, list[str]]]:
    """Every `*.yaml` in `folder`: the ones that load, and the problems of the others by
    sequence id. The daemon runs on what loads: a broken file holds only its own contacts.
    Raises SequenceError only when the folder itself is missing."""
    if not folder.is_dir():
        raise SequenceError(
            [
                f"{folder}: sequences folder not found (create it, or set "
                "'sequences:' in the settings file)"
            ]
        )
    found: dict[str, Sequence] = {}
    broken: dict[str, list[str]] = {}
    boxes = list(mailboxes) if mailboxes is not None else None
    for path in sorted(folder.glob("*.y*ml")):
        if path.suffix == ".yml":
            broken[path.stem] = [
                f"{path}: rename it to {path.stem}.yaml (sequence files end in .yaml)"
            ]
            continue
        try:
            seq = load_sequence(path, boxes)
        except SequenceError as exc:
            broken[path.stem] = exc.problems
            continue
        found[seq.id] = seq
    return found, broken
