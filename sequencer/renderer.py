"""Templates rendered in a separate process, under a time budget and a memory cap.

Owns the render process: starting it, sending it a step and reading the result, and killing
and replacing it when a render overruns. In-process rendering cannot be bounded: Jinja's
sandbox caps one `range()` but not two nested ones, a loop that outputs nothing never reaches
an output check, and `"x" * 10**9` or `"x"|center(10**9)` is one C call that no timer can
interrupt. A child process can be killed at any instant without harm to the daemon, and its
address space is capped (RLIMIT_AS), so a memory bomb fails there with a MemoryError.

One long-lived child serves every render in turn (an asyncio.Lock), compiling each template
once per source text (`render._compiled`). A request is a length-prefixed JSON frame on its
stdin; the reply one on its stdout. While a render runs the event loop only awaits the reply,
so SIGTERM and the other tasks go on; past `budget.seconds` the child is SIGKILLed, the call
raises TemplateError, and the next call starts a fresh child. The child ignores SIGINT and
SIGTERM (the parent decides when it ends: a Ctrl-C or systemd's stop signal reaches the whole
process group), exits when its stdin closes, and caps its own CPU time per render so that even
an orphan stops.

Run as `python -m sequencer.renderer LIMIT` it is the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sequencer import render
from sequencer.errors import TemplateError
from sequencer.render import DEFAULT_BUDGET, Budget

if TYPE_CHECKING:  # the child imports this module: keep it to render's imports
    from sequencer.sequences import Sequence as Seq

#: The child's address space. An idle child takes ~30 MB of it; a message is at most a few
#: MB in flight. 512 MiB leaves room for any legitimate template and stops a bomb early.
MEMORY_LIMIT = 512 << 20
#: How long a fresh child may take to start (imports, ~0.1 s on an idle machine).
START_TIMEOUT = 30.0
_HEAD = struct.Struct(">I")
#: The folder holding the `sequencer` package, put first on the child's path so that it runs
#: this very code, however the parent found it.
_ROOT = str(Path(__file__).resolve().parent.parent)
_ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TZ", "TMPDIR"})
_ENV_PREFIXES = ("PYTHON", "LC_")


class Renderer:
    """The render process, as an async context manager (enter it in the daemon's stack).

    `render_step` may be called from several tasks; renders run one at a time.
    """

    def __init__(self, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self.memory_limit = memory_limit
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.restarts = 0  # children killed or lost so far (for tests and logs)
        self.unbounded = False  # the child could not cap its memory (see `_child`)
        self._reapers: set[asyncio.Future[None]] = set()

    @property
    def pid(self) -> int | None:
        """The render process's id, while there is one."""
        return self._proc.pid if self._proc is not None else None

    async def __aenter__(self) -> Renderer:
        async with self._lock:
            await self._ensure()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Let the child go: close its stdin (it exits at once), kill it if it does not."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=2.0)
        except TimeoutError:
            await _kill(proc)

    async def render_step(
        self,
        subject_source: str | None,
        body_source: str,
        contact: Mapping[str, str],
        sender: Mapping[str, str],
        *,
        budget: Budget = DEFAULT_BUDGET,
    ) -> tuple[str, str]:
        """The rendered subject ("" when `subject_source` is None) and body.

        Raises TemplateError when the template fails, needs more than `budget.max_chars`
        characters or the memory cap, or takes longer than `budget.seconds` (the child is then
        killed and replaced). A child that dies by itself is replaced and the render tried
        once more before it is reported.
        """
        request = json.dumps(
            [
                subject_source,
                body_source,
                dict(contact),
                dict(sender),
                budget.max_chars,
                budget.seconds,
            ]
        ).encode()
        async with self._lock:
            for attempt in (1, 2):
                proc = await self._ensure()
                try:
                    async with asyncio.timeout(budget.seconds):  # no extra task, unlike wait_for
                        reply = await _exchange(proc, request)
                except TimeoutError:
                    await self._lose(proc)
                    raise TemplateError(
                        f"template took longer than {budget.seconds:g} s to render (nested "
                        "loops?); it was stopped"
                    ) from None
                except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                    await self._lose(proc)
                    if attempt == 1:
                        continue
                    raise TemplateError(
                        "the render process died while rendering this template (did it "
                        "need more memory than the cap?)"
                    ) from None
                except BaseException:  # cancelled mid-render
                    self._abandon(proc)
                    raise
                if "error" in reply:
                    raise TemplateError(str(reply["error"]))
                subject, body = reply["ok"]
                return str(subject), str(body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def render_steps(
        self,
        requests: Sequence[RenderRequest],
        *,
        budget: Budget = DEFAULT_BUDGET,
    ) -> list[tuple[str, str] | TemplateError]:
        """Several renders (a send batch) in one exchange with the render process, each
        result or its own TemplateError in order. The whole batch shares one `budget.seconds`
        (a batch of ordinary templates takes milliseconds): a batch that overruns it or kills
        the child is rendered again one at a time, each with the full budget, so only the
        culprit fails."""
        if len(requests) <= 1:
            return [await self._one(r, budget) for r in requests]
        request = json.dumps(
            {
                "many": [list(r) for r in requests],
                "max_chars": budget.max_chars,
                "seconds": budget.seconds,
            }
        ).encode()
        async with self._lock:
            proc = await self._ensure()
            try:
                async with asyncio.timeout(budget.seconds):
                    reply = await _exchange(proc, request)
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                await self._lose(proc)
                reply = None
            except BaseException:
                self._abandon(proc)
                raise
        if reply is None or not isinstance(reply.get("many"), list):
            return [await self._one(r, budget) for r in requests]
        return [
            TemplateError(str(item["error"])) if "error" in item else _pair(item["ok"])
            for item in reply["many"]
        ]

    async def _one(self, request: RenderRequest, budget: Budget) -> tuple[str, str] | TemplateError:
        try:
            return await self.render_step(*request, budget=budget)
        except TemplateError as exc:
            return exc

    def _abandon(self, proc: asyncio.subprocess.Process) -> None:
        """Cancelled mid-render: the reply would come out of step; kill the child without
        waiting (we are being cancelled)."""
        self._proc = None
        self.restarts += 1
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        reaper = asyncio.ensure_future(_kill(proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        if self._proc is not None:
            await self._lose(self._proc)
        # Only what Python needs: the daemon's environment may hold mailbox passwords
        # (password_env), and the child runs other people's templates.
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT or k.startswith(_ENV_PREFIXES)}
        path = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = _ROOT + (os.pathsep + path if path else "")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sequencer.renderer",
            str(self.memory_limit),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            hello = await asyncio.wait_for(_read(proc), timeout=START_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            await _kill(proc)
            raise TemplateError("the render process did not start (see stderr)") from None
        self.unbounded = not hello.get("memory_capped", False)
        self._proc = proc
        return proc

    async def _lose(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = None
        self.restarts += 1
        await _kill(proc)


#: One render: subject source (None: no subject), body source, contact values, sender values.
RenderRequest = tuple[str | None, str, Mapping[str, str], Mapping[str, str]]


def _pair(value: Any) -> tuple[str, str]:
    subject, body = value
    return str(subject), str(body)


async def _exchange(proc: asyncio.subprocess.Process, request: bytes) -> dict[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write(_HEAD.pack(len(request)) + request)
    await proc.stdin.drain()
    return await _read(proc)


async def _read(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    (size,) = _HEAD.unpack(await proc.stdout.readexactly(_HEAD.size))
    if size > 64 << 20:  # far past any budget: the stream is out of step
        raise ValueError("reply too large")
    reply = json.loads(await proc.stdout.readexactly(size))
    if not isinstance(reply, dict):
        raise ValueError("reply is not an object")
    return reply


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    await proc.wait()


async def sample_problems(
    renderer: Renderer,
    seqs: Iterable[Seq],
    senders: Mapping[str, Mapping[str, str]],
    *,
    budget: Budget = DEFAULT_BUDGET,
) -> list[str]:
    """Render every step of every sequence with sample values, as `preview` shows them
    (each required field as its `[name]` placeholder), under the send-time sandbox and
    budget; `file:line: step N: ...` for each step that fails, overruns, or renders a
    subject that cannot be a header or a body that cannot be sent.

    `senders` maps a mailbox name to its sender values ({"name": ..., "address": ...}).
    """
    from sequencer import contacts

    problems: list[str] = []
    for seq in seqs:
        sample, _ = contacts.sample(seq, {})
        sender = senders.get(seq.mailbox, {})
        for step in seq.steps:
            at = f"{seq.path}:{step.line}" if step.line else str(seq.path)
            parts = [("subject", step.subject)] if step.subject is not None else []
            for part, source in [*parts, ("body", step.body)]:
                try:
                    if part == "subject":
                        text, _ = await renderer.render_step(
                            source, "", sample.values, sender, budget=budget
                        )
                        render.check_header_value("subject", text.strip())
                    else:
                        _, text = await renderer.render_step(
                            None, source or "", sample.values, sender, budget=budget
                        )
                        render.check_body(text)
                except TemplateError as exc:
                    why = str(exc).removeprefix(f"{part}: ")
                    problems.append(
                        f"{at}: step {step.number}: {part}: {why} (rendered with sample "
                        "values; `sequencer preview` shows the step)"
                    )
    return problems


def _child() -> None:
    """The render process: read a request, render it, write the reply, until stdin closes."""
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    capped = True
    try:
        limit = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (IndexError, ValueError, OSError) as exc:
        # A seccomp filter may forbid setrlimit (systemd's @resources group); the time
        # budget still holds. The parent is told, and logs it.
        print(f"sequencer render process: memory not capped: {exc}", file=sys.stderr)
        capped = False
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the pipe

    def send(obj: object) -> None:
        data = json.dumps(obj).encode()  # ASCII: a lone surrogate travels as an escape
        out.write(_HEAD.pack(len(data)) + data)
        out.flush()

    send({"hello": "ready", "memory_capped": capped})
    while True:
        head = inp.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return  # the parent closed our stdin, or is gone
        (size,) = _HEAD.unpack(head)
        request = json.loads(inp.read(size))
        if isinstance(request, dict):  # a batch: each render answered on its own
            used = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(used.ru_utime + used.ru_stime + request["seconds"]) + 2
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
            limit = request["max_chars"]
            send({"many": [_render_one(a, b, c, d, limit) for a, b, c, d in request["many"]]})
            continue
        subject, body, contact, sender, max_chars, seconds = request
        # Backstop for an orphan: the parent kills us at `seconds`; if it is gone, the kernel
        # does a little later (RLIMIT_CPU counts the whole process, so it is moved along).
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + seconds) + 2
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        send(_render_one(subject, body, contact, sender, max_chars))


def _render_one(
    subject: str | None, body: str, contact: dict[str, str], sender: dict[str, str], max_chars: int
) -> dict[str, Any]:
    """In the child: one render's reply."""
    try:
        result = render.render_step(subject, body, contact, sender, max_chars=max_chars)
    except TemplateError as exc:
        return {"error": str(exc)}
    except MemoryError:  # outside render() itself, e.g. while joining the output
        return {"error": "template needs too much memory"}
    return {"ok": list(result)}


if __name__ == "__main__":
    _child()
