"""The render process: send-time renders under a time budget and a memory cap, with the event
loop free meanwhile, and a fresh process after any overrun."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sequencer.errors import TemplateError
from sequencer.render import Budget
from sequencer.renderer import Renderer, sample_problems
from sequencer.sequences import load_sequence

CONTACT = {"first_name": "Zoë", "company": "Acme"}
SENDER = {"name": "Sam Seller", "address": "sales@vendor.test"}
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
SHORT = Budget(seconds=0.5)


@pytest.fixture
async def renderer() -> AsyncIterator[Renderer]:
    async with Renderer() as r:
        yield r


class Ticker:
    """A coroutine that must keep running while a render is in flight."""

    def __init__(self) -> None:
        self.ticks = 0

    async def __call__(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1


async def test_a_normal_render(renderer: Renderer) -> None:
    got = await renderer.render_step(
        "Hi {{ contact.first_name }}",
        "From {{ sender.name }} to {{ contact.company }}",
        CONTACT,
        SENDER,
    )
    assert got == ("Hi Zoë", "From Sam Seller to Acme")
    assert await renderer.render_step(None, "x", CONTACT, SENDER) == ("", "x")
    assert not renderer.unbounded  # the child capped its address space


async def test_a_runaway_render_is_stopped_at_its_budget_and_the_loop_stays_free(
    renderer: Renderer,
) -> None:
    """Nested loops that output nothing: no output check can stop them, the budget does."""
    ticker = Ticker()
    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(TemplateError, match=r"took longer than 0\.5 s to render"):
            await renderer.render_step(None, NESTED, CONTACT, SENDER, budget=SHORT)
    finally:
        task.cancel()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5, elapsed  # the budget stopped it (bound generous for load)
    assert ticker.ticks >= 20, ticker.ticks  # ~50 expected: the loop was never blocked
    assert renderer.restarts == 1
    assert await renderer.render_step("Hi", "{{ contact.first_name }}", CONTACT, SENDER) == (
        "Hi",
        "Zoë",
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 10**9 }}", "repeating a value 1000000000 times"),
        ("{{ 'x'|center(900000000) }}", "template needs too much memory"),
        # Doubling by concatenation: no operator to intercept; the address-space cap stops it.
        (
            "{% set s0 = 'xxxxxxxxxx' %}"
            + "".join(f"{{% set s{i + 1} = s{i} ~ s{i} %}}" for i in range(30))
            + "{{ s30|length }}",
            "template needs too much memory",
        ),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "template recurses too deeply"),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "renders more than 256000"),
    ],
)
async def test_bombs_fail_inside_the_render_process(
    renderer: Renderer, source: str, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match=message):
        await renderer.render_step(None, source, CONTACT, SENDER)
    assert time.monotonic() - started < 10  # stopped by a cap, not by running out
    assert await renderer.render_step(None, "ok", CONTACT, SENDER) == ("", "ok")


async def test_a_cancelled_render_kills_the_process_and_the_next_render_works(
    renderer: Renderer,
) -> None:
    """Shutdown cancels the send in flight: the reply would come out of step, so the child
    goes, and a later render gets a fresh one."""
    task = asyncio.create_task(
        renderer.render_step(None, NESTED, CONTACT, SENDER, budget=Budget(seconds=30))
    )
    await asyncio.sleep(0.2)
    pid = renderer.pid
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 3  # killed, not left to finish its 30 s
    assert renderer.restarts == 1
    assert await renderer.render_step(None, "ok", CONTACT, SENDER) == ("", "ok")
    assert renderer.pid != pid


async def test_a_process_killed_from_outside_is_replaced(renderer: Renderer) -> None:
    assert renderer.pid is not None
    os.kill(renderer.pid, signal.SIGKILL)
    await asyncio.sleep(0.05)
    assert await renderer.render_step(None, "ok", CONTACT, SENDER) == ("", "ok")
    assert renderer.restarts == 1


async def test_sigint_and_sigterm_to_the_process_group_leave_the_child_to_the_daemon(
    renderer: Renderer,
) -> None:
    """Ctrl-C and systemd's stop signal reach every process of the group; the daemon decides
    when the child ends, so a send in flight during shutdown still renders."""
    assert renderer.pid is not None
    os.kill(renderer.pid, signal.SIGINT)
    os.kill(renderer.pid, signal.SIGTERM)
    await asyncio.sleep(0.05)
    assert await renderer.render_step(None, "ok", CONTACT, SENDER) == ("", "ok")
    assert renderer.restarts == 0


async def test_concurrent_renders_take_turns(renderer: Renderer) -> None:
    bodies = [f"{{{{ contact.first_name }}}} {i}" for i in range(20)]
    got = await asyncio.gather(*(renderer.render_step(None, b, CONTACT, SENDER) for b in bodies))
    assert [body for _, body in got] == [f"Zoë {i}" for i in range(20)]


async def test_leaving_the_context_ends_the_process() -> None:
    async with Renderer() as r:
        pid = r.pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_lone_surrogate_travels_intact_to_be_refused_by_build() -> None:
    async with Renderer() as r:
        got = await r.render_step(None, "{{ contact.x }}", {"x": "a\udcffb"}, SENDER)
    assert got == ("", "a\udcffb")


async def test_a_render_costs_well_under_a_millisecond(renderer: Renderer) -> None:
    """The daemon renders every send here; a few hundred microseconds is the budget (the
    measured figure is in the report; this bound only catches a gross regression)."""
    body = "Hi {{ contact.first_name }},\n" + "A line of text.\n" * 30 + "{{ sender.name }}\n"
    await renderer.render_step("Hi", body, CONTACT, SENDER)  # compiled once
    started = time.perf_counter()
    for _ in range(200):
        await renderer.render_step("Hi {{ contact.first_name }}", body, CONTACT, SENDER)
    assert (time.perf_counter() - started) / 200 < 0.005


async def test_sample_problems_name_file_line_step_and_part(tmp_path: Path) -> None:
    path = tmp_path / "runaway.yaml"
    path.write_text(
        "mailbox: sales\nsteps:\n"
        "  - wait: 0s\n    subject: Hi {{ contact.first_name }}\n    body: fine\n"
        f'  - wait: 1d\n    body: "{NESTED}"\n'
        '  - wait: 1d\n    body: "{{ 1 / 0 }}"\n'
        '  - wait: 1d\n    breakup: true\n    body: "{{ sender.name }}"\n'
    )
    seq = load_sequence(path)
    started = time.monotonic()
    async with Renderer() as r:
        found = await sample_problems(r, [seq], {"sales": SENDER}, budget=SHORT)
    assert time.monotonic() - started < 10  # the short budget, not the default
    assert found == [
        f"{path}:6: step 2: body: template took longer than 0.5 s to render (nested loops?); "
        "it was stopped (rendered with sample values; `sequencer preview` shows the step)",
        f"{path}:8: step 3: body: template failed while rendering: ZeroDivisionError: "
        "division by zero (rendered with sample values; `sequencer preview` shows the step)",
    ]


def test_an_orphaned_runaway_render_stops_by_itself() -> None:
    """If the daemon is SIGKILLed mid-render, nobody kills the child: its own CPU limit,
    moved along before each render, ends it a moment past the budget."""
    script = textwrap.dedent(
        f"""\
        import asyncio
        from sequencer.render import Budget
        from sequencer.renderer import Renderer

        async def main():
            renderer = await Renderer().__aenter__()
            print(renderer.pid, flush=True)
            await renderer.render_step(None, {NESTED!r}, {{}}, {{}}, budget=Budget(seconds=0.5))

        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.1)
        parent.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break  # dead, waiting for init to reap it
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the orphaned render process was still running after 10 s")


async def test_the_process_does_not_inherit_mailbox_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """password_env secrets live in the daemon's environment; the child runs templates."""
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-Secret-1")
    async with Renderer() as r:
        environ = await asyncio.to_thread(Path(f"/proc/{r.pid}/environ").read_bytes)
        assert await r.render_step(None, "ok", CONTACT, SENDER) == ("", "ok")
    assert b"smtp-Secret-1" not in environ and b"PYTHONPATH=" in environ
