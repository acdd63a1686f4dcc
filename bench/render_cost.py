"""What a send pays to render in the render process rather than in the daemon itself.

Run from the repository root:

    .venv/bin/python bench/render_cost.py [--renders 2000] [--rounds 5]

Renders one realistic step (a subject and a ~1 KB body with contact and sender fields) over
and over, in-process (`render.render_step`, the template compiled once) and through
`Renderer.render_step` (the same function in the long-lived child, over its pipes), and prints
the best round of each in microseconds per render. Also times a cold start of the child and
its replacement after a runaway template is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequencer import render  # noqa: E402
from sequencer.errors import TemplateError  # noqa: E402
from sequencer.renderer import Renderer  # noqa: E402

SUBJECT = "Notes from our call, {{ contact.first_name }}"
BODY = (
    "Hi {{ contact.first_name }},\n\n"
    + "Thanks for the time today. Here is what we covered for {{ contact.company }}.\n" * 12
    + "\n{{ sender.name }}\n{{ sender.address }}\n"
)
CONTACT = {"first_name": "Zoë", "company": "Acme GmbH", "email": "zoe@acme.test"}
SENDER = {"name": "Sam Seller", "address": "sales@vendor.test"}
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def in_process(n: int) -> float:
    render.render_step(SUBJECT, BODY, CONTACT, SENDER)
    started = time.perf_counter()
    for _ in range(n):
        render.render_step(SUBJECT, BODY, CONTACT, SENDER)
    return (time.perf_counter() - started) / n


async def out_of_process(n: int, rounds: int) -> tuple[list[float], float, float]:
    started = time.perf_counter()
    async with Renderer() as renderer:
        cold = time.perf_counter() - started
        await renderer.render_step(SUBJECT, BODY, CONTACT, SENDER)
        best = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(n):
                await renderer.render_step(SUBJECT, BODY, CONTACT, SENDER)
            best.append((time.perf_counter() - started) / n)
        with contextlib.suppress(TemplateError):
            await renderer.render_step(
                None, NESTED, CONTACT, SENDER, budget=render.Budget(seconds=0.2)
            )
        started = time.perf_counter()
        await renderer.render_step(SUBJECT, BODY, CONTACT, SENDER)
        replaced = time.perf_counter() - started
    return best, cold, replaced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    local = min(in_process(args.renders) for _ in range(args.rounds))
    child, cold, replaced = asyncio.run(out_of_process(args.renders, args.rounds))
    print(f"in-process render_step:        {local * 1e6:7.1f} µs per render (best round)")
    print(f"render process (Renderer):     {min(child) * 1e6:7.1f} µs per render (best round)")
    print(f"  rounds: {', '.join(f'{c * 1e6:.0f}' for c in child)} µs")
    print(f"child cold start:              {cold * 1e3:7.1f} ms")
    print(f"first render after a kill:     {replaced * 1e3:7.1f} ms (includes the new child)")


if __name__ == "__main__":
    main()
