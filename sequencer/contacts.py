"""Pure contact intake: `--var` pairs and CSV rows -> validated contact records.

Owns what a valid contact is before anything is written: a good address, variable names and
values that cannot inject headers or fail to send, and every field the sequence needs. A CSV
is checked whole, and every bad row is reported with its line.

A value may hold any letter (Zoë Müller) and a tab, which is harmless in a body and legal
folding white space in a header (the email package encodes it); line breaks, other control
characters and lone surrogates (what undecodable bytes in a command-line argument become) are
refused, since any of them can end up in the subject.

`each` checks a CSV one row at a time (`enroll --csv` streams files of any size); `read_csv`
is the same check of a whole text at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sequencer import csvfile, safetext
from sequencer.addresses import normalize_address
from sequencer.errors import EnrollError
from sequencer.schedule import check_country, check_zone
from sequencer.sequences import Sequence

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Contact:
    email: str
    values: dict[str, str]  # what the templates see, defaults applied
    line: int | None = None


def parse_vars(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    problems = []
    for pair in pairs:
        if "=" not in pair:
            problems.append(f"--var {pair!r}: expected key=value, e.g. --var first_name=Jo")
            continue
        key, value = pair.split("=", 1)
        out[key.strip().lower()] = value
    if problems:
        raise EnrollError(problems)
    return out


def _check_fields(fields: dict[str, str], *, names: bool = True) -> list[str]:
    """Every problem with these fields; `names=False` when the names were checked already
    (a CSV's header, once for all its rows)."""
    # The common row: no character anywhere in it is refused (a value's problem is in one of
    # its characters, so the row's is none of them) and no value is too long.
    if (
        not names
        and safetext.problem("".join(fields.values()), allow="\t") is None
        and max(map(len, fields.values()), default=0) <= 1000
    ):
        return []
    problems = []
    for key, value in fields.items():
        name = key if safetext.problem(key) is None else ascii(key)[1:-1]
        if names and not _NAME.match(key):
            problems.append(f"'{name}' is not a usable field name (lower-case letters, digits, _)")
        bad = safetext.problem(value, allow="\t")
        if bad is not None and bad.startswith("contains a line break"):
            problems.append(f"{name}: contains a line break (header injection is refused)")
        elif bad is not None:
            problems.append(f"{name}: {bad}")
        if len(value) > 1000:
            problems.append(f"{name}: longer than 1000 characters")
    return problems


def _check_place(fields: dict[str, str]) -> list[str]:
    """The reserved scheduling fields: an IANA zone, a country with a holiday calendar (its
    code normalised in `fields`)."""
    zone, country = fields.get("timezone", ""), fields.get("country", "")
    subdivision = fields.get("subdivision", "")
    if not (zone or country or subdivision):
        return []
    problems, code, sub = _place(zone, country, subdivision)
    if code:
        fields["country"] = code
    if sub:
        fields["subdivision"] = sub
    return list(problems)


@functools.lru_cache(maxsize=4096)
def _place(zone: str, country: str, subdivision: str) -> tuple[tuple[str, ...], str, str]:
    """`_check_place` of one place: (problems, country code, subdivision code to store).
    Checked once per distinct place: a list of a million contacts has a few dozen."""
    problems = []
    if zone:
        try:
            check_zone(zone)
        except ValueError as exc:
            problems.append(f"timezone: {exc}")
    if subdivision and not country:
        problems.append("subdivision: give the country too (e.g. --var country=DE)")
    code, sub = "", ""
    if country:
        try:
            code, found = check_country(country, subdivision or None)
        except ValueError as exc:
            problems.append(f"country: {exc}")
        else:
            sub = found or ""
    return tuple(problems), code, sub


def contact(
    seq: Sequence,
    email: str,
    fields: dict[str, str],
    line: int | None = None,
    *,
    names_checked: bool = False,
) -> Contact:
    """One contact, or EnrollError listing everything wrong with it. `names_checked`: the
    field names are a CSV header that `check_header` passed."""
    problems = []
    try:
        address = normalize_address(email)
    except ValueError as exc:
        problems.append(f"email {exc}")
        address = email
    fields = {k: v.strip() for k, v in fields.items() if k != "email"}
    problems += _check_fields(fields, names=not names_checked)
    problems += _check_place(fields)
    if not problems:
        try:
            values = seq.contact_values(address, fields)
        except EnrollError as exc:
            problems += exc.problems
    if problems:
        raise EnrollError(problems)
    return Contact(address, values, line)


def sample(seq: Sequence, fields: dict[str, str]) -> tuple[Contact, list[str]]:
    """A contact for `preview`: the given fields checked like a real one, and every field the
    templates need but nobody gave shown as a `[name]` placeholder (listed in the result)."""
    given = {k: v.strip() for k, v in fields.items()}
    address = given.pop("email", "") or "contact@example.com"
    problems = _check_fields(given) + _check_place(given)
    try:
        address = normalize_address(address)
    except ValueError as exc:
        problems.append(f"email {exc}")
    if problems:
        raise EnrollError(problems)
    values: dict[str, str] = {k: v for k, v in seq.variables.items() if v is not None}
    values.update({k: v for k, v in given.items() if v})
    values["email"] = address
    missing = sorted(name for name in seq.required_fields if not values.get(name, "").strip())
    values.update({name: f"[{name}]" for name in missing})
    return Contact(address, values), missing


def _advise(problem: str, email: str) -> str:
    """A bad address in a CSV is most often a shifted column or a row saved with another
    delimiter than its header: say what to look at."""
    if not problem.startswith("email '"):
        return problem
    for delimiter, word in csvfile.DELIMITERS.items():
        if delimiter in email:
            return f"{problem}: it contains a {word}, so this row may use another delimiter"
    return f"{problem}: check the column order or the delimiter"


@dataclass(frozen=True)
class Refused:
    """A CSV row that is not a valid contact, with every reason, each `name:line: ...`."""

    line: int
    problems: tuple[str, ...]


def check_header(header: Iterable[str], name: str) -> None:
    """EnrollError (`name:1: ...`) for a column name no contact field can have."""
    bad_header = _check_fields({h: "" for h in header if h})
    if bad_header:
        raise EnrollError([f"{name}:1: {p}" for p in bad_header])


def each(seq: Sequence, rows: Iterable[csvfile.Row], name: str) -> Iterator[Contact | Refused]:
    """Every row of a CSV as a contact or as the reasons it is not one, in order, one at a
    time (a file of any size). The header passed `check_header` first."""
    for row in rows:
        if row.problem:
            yield Refused(row.line, (f"{name}:{row.line}: {row.problem}",))
            continue
        email = row.fields.get("email", "")
        try:
            yield contact(seq, email, row.fields, row.line, names_checked=True)
        except EnrollError as exc:
            yield Refused(
                row.line, tuple(f"{name}:{row.line}: {_advise(p, email)}" for p in exc.problems)
            )


def refusal(name: str, problems: list[str], count: int | None = None) -> EnrollError:
    """The error for a list with bad rows: how many, then each (`count` when only the first
    ones are listed)."""
    total = len(problems) if count is None else count
    more = [f"... and {total - len(problems)} more"] if total > len(problems) else []
    return EnrollError([f"{total} problem(s) in {name}; nothing was enrolled:", *problems, *more])


def read_csv(seq: Sequence, text: str, name: str) -> list[Contact]:
    """Every row of a CSV with a header row, or EnrollError listing every bad row."""
    try:
        header, rows = csvfile.read(text, name)
    except ValueError as exc:
        raise EnrollError([str(exc)]) from None
    check_header(header, name)
    contacts: list[Contact] = []
    problems: list[str] = []
    for item in each(seq, rows, name):
        if isinstance(item, Refused):
            problems += item.problems
        else:
            contacts.append(item)
    if problems:
        raise refusal(name, problems)
    return contacts


#: Courtesy titles that come before a first name in a display name ("Dr. Jane Smith").
_TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "herr", "frau", "m", "mme", "mlle", "sr"}
    | {"sra", "srta", "dott", "dott.ssa", "ing", "sig", "sig.ra", "dhr", "mevr"}
)


def first_name(display_name: str | None) -> str | None:
    """The first name in a display name ("Jane Smith", "Smith, Jane", "Dr. Jane Smith"), or
    None when it gives none (empty, an address, no letters). Written as given, except that an
    all-capitals name is capitalised ("JANE SMITH" -> "Jane")."""
    text = " ".join((display_name or "").replace('"', " ").split())
    if "," in text:  # "Smith, Jane": the family name first
        family, _, given = text.partition(",")
        text = given.strip() or family.strip()
    words = [w for w in text.split() if w.lower().rstrip(".") not in _TITLES]
    if not words:
        return None
    word = words[0].strip("()'<>")
    if not word or "@" in word or not any(ch.isalpha() for ch in word) or len(word) > 60:
        return None
    if safetext.problem(word) is not None:
        return None
    return word.capitalize() if word.isupper() and len(word) > 1 else word
