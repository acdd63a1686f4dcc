"""Pure template rendering and message building.

Owns: the sandboxed, strict Jinja2 environment and the render budget; which contact fields a
template uses (so `check` can reject undeclared ones and `enroll` can demand required ones);
turning a step into the exact bytes sent, with Message-ID, In-Reply-To and References so
clients show one thread. Must not import asyncio, tortoise or any network library.

The output budget is enforced here, as chunks come out. The time budget and the memory cap
cannot be enforced in-process (a loop that outputs nothing never yields to a check, and
`"x" * 10**9` is one C call): `renderer.py` runs these functions in a process it can kill.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from sequencer import safetext
from sequencer.errors import TemplateError

#: Names a template may use at the top level.
CONTEXT_NAMES = frozenset({"contact", "sender"})
SENDER_FIELDS = frozenset({"name", "address"})
#: Contact fields every contact has, whatever the sequence declares.
BUILTIN_FIELDS = frozenset({"email", "first_name"})
#: RFC 5322 2.1.1: a line is at most 998 characters; longer body lines go quoted-printable.
MAX_LINE = 998
_FOLD_AT = 78  # RFC 5322's recommended header line length
#: What a body may hold besides printable text: tabs and line breaks (a pasted paragraph
#: may carry U+2028/U+2029). Control characters and lone surrogates are refused.
BODY_ALLOWED = "\t\n\u2028\u2029"


@dataclass(frozen=True)
class Budget:
    """What one message's render may cost.

    A follow-up renders in well under a millisecond and is a few KB; Gmail clips anything over
    102 KB. Two seconds is a thousand times a normal render, so a loaded machine never trips
    it, yet a runaway template holds its mailbox up for no longer than that. 256,000
    characters (subject and body together) is fifty long emails, far under any server's
    SIZE limit (10 MB and more), so only a template bug reaches it.
    """

    seconds: float = 2.0
    max_chars: int = 256_000


DEFAULT_BUDGET = Budget()


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, which caps one `range()`, plus refusals of the arithmetic that
    builds a huge value in one C call: `"x" * 10**9`, `[0] * 10**9`, `9 ** 10**9`."""

    intercepted_binops = frozenset({"*", "**"})
    max_chars = DEFAULT_BUDGET.max_chars

    def call_binop(self, context: Context, operator: str, left: object, right: object) -> object:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(times, int)
                    and len(seq) * times > self.max_chars
                ):
                    raise SecurityError(
                        f"repeating a value {times} times would exceed {self.max_chars} characters"
                    )
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and left.bit_length() * right > 4096
        ):
            raise SecurityError(f"{left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, trim_blocks=True
)


@dataclass(frozen=True)
class TemplateUse:
    contact_fields: frozenset[str]
    sender_fields: frozenset[str]
    unknown_names: frozenset[str]
    dynamic_access: bool  # contact[some_expression]: fields cannot be known statically
    #: Contact fields every read of which is safe when the contact lacks the field: the
    #: argument of a `default`/`d` filter, or under `{% if contact.x is defined %}`. (A bare
    #: `{% if contact.x %}` is not: StrictUndefined raises when the field is absent.)
    defaulted_fields: frozenset[str] = frozenset()


def analyse(source: str) -> TemplateUse:
    """Which names and fields a template reads. Raises TemplateError on a syntax error."""
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None
    fields: dict[str, set[str]] = {"contact": set(), "sender": set()}
    dynamic = False
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if isinstance(target, nodes.Name) and target.name in fields:
            if isinstance(node, nodes.Getattr):
                fields[target.name].add(node.attr)
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                fields[target.name].add(str(node.arg.value))
            else:
                dynamic = True
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    loaded = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    unknown = loaded - CONTEXT_NAMES - assigned - set(_ENV.globals)
    guarded = _guarded_reads(tree)
    unguarded = {
        name
        for node in tree.find_all((nodes.Getattr, nodes.Getitem))
        if (name := _contact_field(node)) is not None and id(node) not in guarded
    }
    return TemplateUse(
        frozenset(fields["contact"]),
        frozenset(fields["sender"]),
        frozenset(unknown),
        dynamic,
        frozenset(fields["contact"] - unguarded),
    )


def _contact_field(node: nodes.Node | None) -> str | None:
    """`x` for `contact.x` or `contact["x"]`; None for anything else."""
    target = getattr(node, "node", None)
    if not (isinstance(target, nodes.Name) and target.name == "contact"):
        return None
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return str(node.arg.value)
    return None


def _defined_tests(test: nodes.Node) -> set[str]:
    """Fields a test proves present: `contact.x is defined`, alone or joined with `and`."""
    if isinstance(test, nodes.Test) and test.name == "defined":
        name = _contact_field(test.node)
        return {name} if name is not None else set()
    if isinstance(test, nodes.And):
        return _defined_tests(test.left) | _defined_tests(test.right)
    return set()


def _guarded_reads(tree: nodes.Template) -> set[int]:
    """ids of the contact reads that render even when the field is absent."""
    guarded: set[int] = set()
    for flt in tree.find_all(nodes.Filter):
        if flt.name in ("default", "d") and _contact_field(flt.node) is not None:
            guarded.add(id(flt.node))
    branches = [(i.test, list(i.body)) for i in tree.find_all(nodes.If)]
    branches += [(c.test, [c.expr1]) for c in tree.find_all(nodes.CondExpr)]
    for test, body in branches:
        names = _defined_tests(test)
        # The test itself (`and` short-circuits) and the branch it opens, not `else`.
        for part in (test, *body) if names else ():
            for read in (part, *part.find_all((nodes.Getattr, nodes.Getitem))):
                if _contact_field(read) in names:
                    guarded.add(id(read))
    return guarded


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    """Each template is compiled once (a few ms) and rendered many times (microseconds)."""
    return _ENV.from_string(source)


def render(
    source: str,
    contact: Mapping[str, str],
    sender: Mapping[str, str],
    *,
    max_chars: int = DEFAULT_BUDGET.max_chars,
) -> str:
    """Render strictly: a missing field is an error, never a blank in a sent email.

    Output past `max_chars` stops the render (checked as each chunk comes out)."""
    try:
        chunks = _compiled(source).generate(contact=dict(contact), sender=dict(sender))
        out: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > max_chars:
                raise TemplateError(
                    f"template renders more than {max_chars} characters (a loop that "
                    "never ends, or too much text?); an email should be a few KB"
                )
            out.append(chunk)
        return "".join(out)
    except TemplateError:
        raise
    except UndefinedError as exc:
        raise TemplateError(f"template uses a value the contact does not have: {exc}") from None
    except SecurityError as exc:
        raise TemplateError(f"template tried something the sandbox forbids: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None
    except MemoryError:
        raise TemplateError(
            "template needs too much memory (a huge repeated string or list?)"
        ) from None
    except RecursionError:
        raise TemplateError("template recurses too deeply (a macro that calls itself?)") from None
    except Exception as exc:  # 1/0, "a" + 1, range(10**9): the template's fault, not ours
        raise TemplateError(
            f"template failed while rendering: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def render_step(
    subject_source: str | None,
    body_source: str,
    contact: Mapping[str, str],
    sender: Mapping[str, str],
    *,
    max_chars: int = DEFAULT_BUDGET.max_chars,
) -> tuple[str, str]:
    """A step's subject ("" when it has none) and body, within one output budget.

    An error names the part that failed: "subject: ..." or "body: ...".
    """
    subject = ""
    if subject_source is not None:
        try:
            subject = render(subject_source, contact, sender, max_chars=max_chars)
        except TemplateError as exc:
            raise TemplateError(f"subject: {exc}") from None
    try:
        body = render(body_source, contact, sender, max_chars=max_chars - len(subject))
    except TemplateError as exc:
        raise TemplateError(f"body: {exc}") from None
    return subject, body


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID on the mailbox's own domain."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def reply_subject(first_subject: str) -> str:
    """`Re: <first subject>`, never `Re: Re: ...`."""
    subject = first_subject.strip()
    if subject[:3].lower() == "re:":
        return subject
    return f"Re: {subject}" if subject else "Re:"


def check_header_value(what: str, value: str) -> None:
    """Header injection guard: a header value is one line of characters UTF-8 can encode."""
    # Not only CR and LF: the email package also treats \v, \f, \x1c-\x1e, \x85, \u2028 and
    # \u2029 as line breaks and would refuse them with a bare ValueError. A tab is folding
    # white space, legal in a header (it is encoded where the value needs encoded words).
    bad = safetext.problem(value, allow="\t")
    if bad is None:
        return
    if bad.startswith("contains a line break"):
        raise TemplateError(f"{what} contains a line break; header values must be one line")
    raise TemplateError(f"{what} {bad}")


def check_body(body: str) -> None:
    """A body holds text, tabs and line breaks: a lone surrogate would fail to encode on every
    retry, and control characters have no place in a plain-text email."""
    bad = safetext.problem(body, allow=BODY_ALLOWED)
    if bad is not None:
        raise TemplateError(f"body {bad}")


def _encoded_words(name: str, value: str) -> str:
    """`value` as RFC 2047 encoded words, folded to 78 columns.

    Python 3.11's own folder (email.policy) can put the fold exactly on a space between two
    encoded words, where RFC 2047 says the space is ignored: "Zoë Müller" would show as
    "ZoëMüller". The legacy Header encoder keeps every space inside an encoded word.
    """
    return Header(value, "utf-8", maxlinelen=_FOLD_AT, header_name=name).encode(linesep="\r\n")


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    subject: str
    data: bytes


def build_message(
    *,
    from_address: str,
    from_name: str,
    to_address: str,
    subject: str,
    body: str,
    message_id: str,
    date: datetime,
    thread: Sequence[str] = (),
    unsubscribe: str | None = None,
) -> Outgoing:
    """The bytes to hand to SMTP. `thread` is the Message-IDs already sent, oldest first.

    `unsubscribe` is the mailbox address for `List-Unsubscribe: <mailto:...?subject=unsubscribe>`
    (RFC 2369); off by default because RFC 3834 responders skip mail carrying List-* headers.
    """
    check_header_value("subject", subject)
    check_header_value("display name", from_name)
    # A template's stray space at either end: mail clients drop it when they read the header,
    # so it is dropped here and the Subject we record is the one they show.
    subject = subject.strip()
    if not subject:
        raise TemplateError("subject renders empty")
    if not body.strip():
        raise TemplateError("body renders empty")
    check_body(body)
    check_header_value("address", to_address)
    # Headers are kept in their wire form and folded as the email package's generator folds
    # them; the one text/plain part is written out here. Parsing each header into an object
    # and the content manager's MIME handling were most of the send path's CPU per message
    # (tests/test_render.py checks the bytes against the email package's own).
    local, domain = from_address.rsplit("@", 1)
    if from_name.isascii():
        sender = formataddr((from_name, from_address))
    else:
        addr = f"<{Address(username=local, domain=domain).addr_spec}>"
        lines = _encoded_words("From", from_name).split("\r\n")
        if len(lines[-1]) + 1 + len(addr) <= _FOLD_AT - (len("From: ") if len(lines) == 1 else 0):
            lines[-1] += f" {addr}"
        else:
            lines.append(f" {addr}")
        sender = "\r\n".join(lines)
    headers = [
        ("From", sender),
        ("To", to_address),
        ("Subject", subject if subject.isascii() else _encoded_words("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    if thread:
        headers += [("In-Reply-To", thread[-1]), ("References", " ".join(thread))]
    if unsubscribe:
        headers.append(("List-Unsubscribe", f"<mailto:{unsubscribe}?subject=unsubscribe>"))
    text = body if body.endswith("\n") else body + "\n"
    short = all(len(line) <= MAX_LINE for line in text.splitlines())
    cte = "7bit" if text.isascii() and short else "quoted-printable"
    headers += [
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", cte),
        ("MIME-Version", "1.0"),
    ]
    head = b"".join(SMTP.fold_binary(name, value) for name, value in headers)
    return Outgoing(message_id=message_id, subject=subject, data=head + b"\r\n" + _body(text, cte))


def _body(text: str, cte: str) -> bytes:
    """The body in `cte`, with CRLF line ends: what the email package's content manager
    makes of a `text/plain; charset=utf-8` part (its line split, its quoted-printable
    encoder at the policy's line length, 78)."""
    lines = text.encode("utf-8").splitlines()
    if cte == "7bit":
        return b"\r\n".join(lines) + b"\r\n"
    encoded = quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), _FOLD_AT)
    return encoded.replace("\n", "\r\n").encode("ascii")
