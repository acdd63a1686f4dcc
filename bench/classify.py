"""Inbox classification benchmark: quality per category and throughput on one core.

Run from the repository root:

    .venv/bin/python bench/classify.py [--repeat N] [--rounds 3] [--replies DIR ...]
    .venv/bin/python bench/classify.py --quick     # one copy, 2 rounds (bench/run_all)

Reads every message the classifier tests read (tests/corpus/ and tests/mail/) with the labels
those tests use: the label mapping is imported from tests/test_classify.py, so the benchmark
and the quality bars can never disagree about what a file should be. Prints precision and
recall per category, the confusion matrix (true category x predicted category), the share of
hard bounces whose failed recipient was found, and messages per second through `classify`
beside a baseline of flufl.bounce alone (`scan_message` on the same bytes, parsed with
`email.message_from_bytes`), each the best of several rounds over the corpus repeated N times.

Then, for the labelled replies in tests/mail/replies.csv (and any other folder labelled the same
way, given with --replies), what each reply asks: removal-request and intent precision and
recall, their confusion matrix, and how many follow-up dates, suppressions and referrals were
exactly right (the labels are read by tests/test_reply_intent.py's loader).
"""

from __future__ import annotations

import argparse
import email
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flufl.bounce import scan_message  # noqa: E402

from sequencer.classify import Classification, Verdict, classify  # noqa: E402
from tests.test_classify import Case, _cases, _raw  # noqa: E402
from tests.test_reply_intent import Label, load_labels  # noqa: E402

READINGS = ("removal", "interested", "not_now", "referral", "decline", "unclear", "other")

CATEGORIES = (
    "human_reply",
    "auto_reply",
    "bounce-hard",
    "bounce-soft",
    "bounce-delay",
    "unsubscribe_request",
    "other",
)


def category(verdict: Verdict, kind: str | None, hard: bool | None) -> str:
    """One of CATEGORIES: bounces split into hard, soft and delay warnings."""
    if verdict is Verdict.BOUNCE:
        if kind == "delay":
            return "bounce-delay"
        return "bounce-hard" if hard else "bounce-soft"
    return str(verdict)


def expected(case: Case) -> str:
    return category(case.verdict, case.kind, case.hard)


def predicted(got: Classification) -> str:
    return category(got.verdict, got.kind, got.hard)


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def quality(cases: tuple[Case, ...], results: dict[str, Classification]) -> list[str]:
    pairs = [(expected(c), predicted(results[c.label])) for c in cases]
    confusion = Counter(pairs)
    lines = [
        "## Precision and recall per category",
        "",
        "| category | n | predicted | correct | precision | recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cat in CATEGORIES:
        n = sum(1 for truth, _ in pairs if truth == cat)
        guessed = sum(1 for _, guess in pairs if guess == cat)
        hits = confusion[(cat, cat)]
        lines.append(
            f"| {cat} | {n} | {guessed} | {hits} | {pct(hits, guessed)} | {pct(hits, n)} |"
        )
    accuracy = sum(confusion[(c, c)] for c in CATEGORIES)
    lines += ["", f"Overall: {accuracy}/{len(pairs)} = {pct(accuracy, len(pairs))} correct.", ""]

    short = {c: c.replace("_request", "").replace("_reply", "") for c in CATEGORIES}
    lines += [
        "## Confusion matrix (rows: true category, columns: predicted)",
        "",
        "| true \\ predicted | " + " | ".join(short[c] for c in CATEGORIES) + " |",
        "|---|" + "---:|" * len(CATEGORIES),
    ]
    for truth in CATEGORIES:
        cells = [str(confusion[(truth, guess)] or ".") for guess in CATEGORIES]
        lines.append(f"| {truth} | " + " | ".join(cells) + " |")

    hard = [c for c in cases if expected(c) == "bounce-hard"]
    found = [c for c in hard if results[c.label].recipients]
    reputation = [c for c in cases if results[c.label].reputation]
    lines += [
        "",
        "## Bounce details",
        "",
        f"- hard bounces with the failed recipient extracted: {len(found)}/{len(hard)} "
        f"= {pct(len(found), len(hard))}",
        f"- bounces flagged `reputation` (sender-side refusals): {len(reputation)}",
        "",
    ]
    errors = [(c, t, g) for c, (t, g) in zip(cases, pairs, strict=True) if t != g]
    if errors:
        lines += ["## Misclassified", ""]
        lines += [f"- `{c.label}`: {t} -> {g}" for c, t, g in errors]
        lines.append("")
    return lines


def reading(verdict: Verdict, intent: object) -> str:
    """What a reply asks, as one of READINGS: a removal request, a human reply's intent."""
    if verdict is Verdict.UNSUBSCRIBE_REQUEST:
        return "removal"
    if verdict is Verdict.HUMAN_REPLY and intent is not None:
        return str(intent)
    return "other"


def replies(folder: Path) -> list[str]:
    """Removal-request and intent precision/recall on a folder of labelled replies."""
    labels: tuple[Label, ...] = load_labels(folder)
    got = {lb.path: classify((folder / lb.path).read_bytes()) for lb in labels}
    pairs = [
        (reading(lb.verdict, lb.intent), reading(got[lb.path].verdict, got[lb.path].intent))
        for lb in labels
    ]
    confusion = Counter(pairs)
    shown = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    lines = [
        f"## What replies ask: {shown} ({len(labels)} labelled replies)",
        "",
        "| reading | n | predicted | correct | precision | recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cat in READINGS[:-1]:
        n = sum(1 for truth, _ in pairs if truth == cat)
        guessed = sum(1 for _, guess in pairs if guess == cat)
        hits = confusion[(cat, cat)]
        lines.append(
            f"| {cat} | {n} | {guessed} | {hits} | {pct(hits, guessed)} | {pct(hits, n)} |"
        )
    humans = [(t, g) for t, g in pairs if t not in {"removal", "other"}]
    right = sum(1 for t, g in humans if t == g)
    lines += [
        "",
        f"Intent accuracy over human replies: {right}/{len(humans)} = {pct(right, len(humans))}.",
        "",
    ]
    lines += [
        "| true \\ predicted | " + " | ".join(READINGS) + " |",
        "|---|" + "---:|" * len(READINGS),
    ]
    for truth in READINGS[:-1]:
        cells = [str(confusion[(truth, guess)] or ".") for guess in READINGS]
        lines.append(f"| {truth} | " + " | ".join(cells) + " |")
    dated = [lb for lb in labels if lb.follow_up]
    inside = [
        lb
        for lb in dated
        if (d := got[lb.path].follow_up_on)
        and lb.follow_up
        and lb.follow_up[0] <= d <= lb.follow_up[1]
    ]
    removals = [lb for lb in labels if lb.verdict is Verdict.UNSUBSCRIBE_REQUEST]
    exact = [lb for lb in removals if frozenset(got[lb.path].suppress) == lb.suppress]
    referred = [lb for lb in labels if lb.referral]
    named = [lb for lb in referred if {r.address for r in got[lb.path].referral} == lb.referral]
    lines += [
        "",
        f"- `follow_up_on` within the named period: {len(inside)}/{len(dated)}",
        f"- removal requests suppressing exactly whom they ask: {len(exact)}/{len(removals)}",
        f"- referrals naming exactly the people pointed to: {len(named)}/{len(referred)}",
        "",
    ]
    wrong = [(lb.path, t, g) for lb, (t, g) in zip(labels, pairs, strict=True) if t != g]
    if wrong:
        lines += ["Misread:", ""] + [f"- `{p}`: {t} -> {g}" for p, t, g in wrong] + [""]
    return lines


def best_rate(run: Callable[[list[bytes]], None], data: list[bytes], rounds: int) -> float:
    """Messages per second, best of `rounds` passes over `data`."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(data)
        best = min(best, time.perf_counter() - start)
    return len(data) / best


def run_classify(data: list[bytes]) -> None:
    for raw in data:
        classify(raw)


def run_flufl(data: list[bytes]) -> None:
    for raw in data:
        try:  # some detectors raise on odd mail (Yale on an empty From); classify never does
            scan_message(email.message_from_bytes(raw))
        except Exception:  # noqa: S112 - a failure is still a message processed
            continue


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- CPU: {model}; nproc {os.cpu_count()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="corpus copies per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument(
        "--replies",
        type=Path,
        action="append",
        help="a folder of replies labelled like tests/mail/replies.csv (default: tests/mail)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one corpus copy, 2 rounds (bench/run_all's size)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.rounds = 1, 2
    logging.disable(logging.CRITICAL)  # flufl.bounce logs every detector that raises
    if hasattr(os, "sched_setaffinity"):  # one core, whatever the machine has
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    cases = _cases()
    raws = [_raw(c) for c in cases]
    results = {c.label: classify(raw) for c, raw in zip(cases, raws, strict=True)}
    lines = ["# Inbox classification", "", *machine(), ""]
    lines += [f"Messages: {len(cases)} (tests/corpus + tests/mail).", ""]
    lines += quality(cases, results)
    folders = [f.resolve() for f in args.replies or [ROOT / "tests" / "mail"]]
    for folder in folders:
        lines += replies(folder)
    answers = [(f / lb.path).read_bytes() for f in folders for lb in load_labels(f)]

    data = raws * args.repeat
    ours = best_rate(run_classify, data, args.rounds)
    flufl = best_rate(run_flufl, data, args.rounds)
    lines += [
        "## Throughput (one core)",
        "",
        f"{len(data)} messages per round ({len(cases)} x {args.repeat}), best of {args.rounds}.",
        "",
        "| what | messages/s | ratio |",
        "|---|---:|---:|",
        f"| `sequencer.classify.classify` | {ours:,.0f} | {ours / flufl:.2f} |",
        "| baseline: `email.message_from_bytes` + `flufl.bounce.scan_message` "
        f"| {flufl:,.0f} | 1.00 |",
    ]
    # Human replies are where intent (and dateparser, for a written date) does its work.
    answered = best_rate(run_classify, answers * args.repeat, args.rounds)
    lines += [
        "",
        f"The {len(answers)} labelled replies alone, the same way ({len(answers)} x "
        f"{args.repeat}, best of {args.rounds}): {answered:,.0f} messages/s.",
    ]
    lines += [
        "",
        f"summary: classify {ours:,.0f} msg/s = {ours / flufl:.2f}x the flufl.bounce baseline "
        f"({flufl:,.0f} msg/s); issue 12's floor is 500 msg/s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
