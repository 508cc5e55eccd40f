"""The benchmark's I/O: sends a load step of streaming requests to an OpenAI-compatible server and times them.

``run_plan`` runs a ``BenchPlan``: one step, or the SLO sweep step by step through ``benchmark.next_probe``. Each
request asks ``/v1/chat/completions`` (or ``/v1/completions``) for exactly the wanted output (``max_tokens`` with
``ignore_eos``) as a stream with usage at its end; the time of every content chunk is taken with
``time.perf_counter`` as it arrives. Output tokens come from the usage the server reports, else one per chunk.
Failures (an HTTP error, a broken stream, a timeout) are kept apart as errors, never as latencies.

A step stops sending once half of it has completed and its SLOs can no longer be met (``benchmark.doomed``: enough
requests are already past a percentile's limit), and cancels what is in flight, so a sweep spends little time
waiting for a queue to drain above the server's capacity.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from studio.benchmark import (
    BenchPlan,
    BenchResult,
    Load,
    Probe,
    Record,
    Shape,
    Slo,
    StepSummary,
    Workload,
    answer,
    doomed,
    next_probe,
    percentile,
    summarize,
)

# Short common words that most tokenizers keep as one token each (with their leading space).
# fmt: off
WORDS = (
    "the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "as", "with",
    "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
    "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how",
    "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
    "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
    "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now",
    "find", "long", "down", "day", "did", "get", "come", "made", "may", "part",
)
# fmt: on
PROGRESS_EVERY_S = 1.0
WATCH_EVERY_S = 0.05

Say = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where requests go: an OpenAI-compatible base URL (with or without ``/v1``), the model to name, a key."""

    url: str
    model: str
    endpoint: Literal["chat", "completions"] = "chat"
    api_key: str | None = None

    @property
    def address(self) -> str:
        base = self.url.rstrip("/").removesuffix("/v1")
        return f"{base}/v1/chat/completions" if self.endpoint == "chat" else f"{base}/v1/completions"

    def body(self, prompt: str, shape: Shape) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": shape.output,
            "ignore_eos": True,  # as vLLM's benchmark: every request produces exactly the wanted output
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body


class Prompter:
    """Prompts of a wanted length in tokens: random token ids decoded by the model's tokenizer when a folder is
    given (as vLLM's random dataset), else random common words (one word ≈ one token). The shared prefix is the
    same text for every request; the rest depends on the request's index and the workload's seed only.

    Making a prompt with a tokenizer takes milliseconds of the event loop, which would delay reading the streams in
    flight and add to their latencies: ``prepare`` makes a step's prompts before its clock starts (as vLLM's and
    GuideLLM's benchmarks build their requests up front), and each is kept for the steps that follow."""

    def __init__(self, workload: Workload, tokenizer: str | None = None) -> None:
        self.workload = workload
        self.made: dict[int, str] = {}
        self.tokenizer: Any = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.prefix = self.text(workload.prefix_len, random.Random(workload.seed)) if workload.prefix_len else ""

    def text(self, tokens: int, rng: random.Random) -> str:
        if self.tokenizer is None:
            return " ".join(rng.choice(WORDS) for _ in range(tokens))
        special = set(self.tokenizer.all_special_ids)
        ids = [i for i in (rng.randrange(self.tokenizer.vocab_size) for _ in range(tokens * 2)) if i not in special]
        # decoding and encoding again need not give the same ids: cut to the wanted count once re-encoded
        again = self.tokenizer.encode(self.tokenizer.decode(ids[:tokens]), add_special_tokens=False)[:tokens]
        return str(self.tokenizer.decode(again))

    def prompt(self, index: int, shape: Shape) -> str:
        if (made := self.made.get(index)) is not None:
            return made
        own = self.text(shape.input, random.Random(self.workload.seed * 7919 + index + 1))
        self.made[index] = made = f"{self.prefix} {own}" if self.prefix else own
        return made

    def prepare(self, count: int) -> None:
        """Makes the prompts of requests 0 … count − 1 now (those already made are kept)."""
        for index in range(count):
            self.prompt(index, self.workload.shape(index))


def _content(event: dict[str, Any]) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    if "text" in first:
        return str(first.get("text") or "")
    delta = first.get("delta") or {}
    return str(delta.get("content") or delta.get("reasoning_content") or "")


async def send(session: aiohttp.ClientSession, target: Target, prompt: str, shape: Shape) -> Record:
    """One streamed request, timed; a failure becomes a Record with ``error`` set, never an exception."""
    headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    chunks: list[float] = []
    usage: dict[str, Any] = {}
    last = 0.0
    sent = time.perf_counter()
    try:
        async with session.post(target.address, json=target.body(prompt, shape), headers=headers) as response:
            if response.status != 200:
                text = (await response.text())[:200]
                return Record(sent=sent, ended=time.perf_counter(), error=f"HTTP {response.status}: {text}")
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                last = time.perf_counter()  # as vLLM: E2EL ends at the stream's last data event (usage included)
                if "error" in event:
                    return Record(sent=sent, ended=time.perf_counter(), error=f"in stream: {event['error']}")
                if _content(event):
                    chunks.append(last)
                usage = event.get("usage") or usage
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Record(sent=sent, ended=time.perf_counter(), error=f"{type(exc).__name__}: {exc}"[:200])
    ended = last or time.perf_counter()
    if not chunks:
        return Record(sent=sent, ended=ended, error="the stream ended without content")
    return Record(
        sent=sent,
        chunks=tuple(chunks),
        ended=ended,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or len(chunks)),
    )


@dataclass(frozen=True)
class Step:
    """One load step: ``load`` until ``requests`` were sent or ``duration_s`` passed (whichever comes first)."""

    load: Load
    requests: int | None = None
    duration_s: float | None = None
    slos: tuple[Slo, ...] = ()

    @property
    def planned(self) -> int | None:
        if self.requests is not None:
            return self.requests
        if self.load.rate is not None and self.duration_s is not None:
            return int(self.load.rate * self.duration_s)
        return None


class StepRun:
    """The running state of one step: records, requests in flight, and whether to stop early."""

    def __init__(self, session: aiohttp.ClientSession, target: Target, prompter: Prompter, step: Step) -> None:
        self.session, self.target, self.prompter, self.step = session, target, prompter, step
        self.records: list[Record] = []
        self.live: dict[int, float] = {}  # index → when sent
        self.cut = False
        self.sent = 0
        self.slots = asyncio.Semaphore(step.load.concurrency) if step.load.concurrency else None

    async def one(self, index: int) -> None:
        try:
            shape = self.prompter.workload.shape(index)
            prompt = self.prompter.prompt(index, shape)
            self.live[index] = time.perf_counter()
            self.records.append(await send(self.session, self.target, prompt, shape))
        finally:
            self.live.pop(index, None)
            if self.slots is not None:
                self.slots.release()

    def over_limit(self) -> dict[str, int]:
        """Per SLO, the requests already past its limit: finished ones, and (E2EL) ones still in flight."""
        now = time.perf_counter()
        counts = {}
        for slo in self.step.slos:
            limit = slo.limit_ms / 1000
            done = [r for r in self.records if r.error is None]
            late = sum(1 for r in done if (r.ttft if slo.metric == "ttft" else r.e2el) > limit)
            if slo.metric == "e2el":
                late += sum(1 for t in self.live.values() if now - t > limit)
            counts[slo.text] = late
        return counts

    def line(self) -> str:
        e2el = [r.e2el for r in self.records if r.error is None]
        p99 = f"{percentile(e2el, 99) * 1000:.0f} ms" if e2el else "–"
        errors = sum(1 for r in self.records if r.error is not None)
        return (
            f"  {self.step.load.words()}: sent {self.sent}, done {len(self.records)}, errors {errors}, "
            f"in flight {len(self.live)}, p99 E2EL {p99}"
        )

    async def watch(self, say: Say) -> None:
        planned = self.step.planned
        last = time.perf_counter()
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            # cut short only once half the step is in: a saturated step's completion rate estimates the capacity
            half = len(self.records) >= min(planned or 0, max(10, (planned or 0) // 2))
            if planned and half and self.step.slos and doomed(self.step.slos, planned, self.over_limit()):
                self.cut = True
            if time.perf_counter() - last >= PROGRESS_EVERY_S:
                last = time.perf_counter()
                say(self.line())

    async def run(self, say: Say) -> StepSummary:
        load, step = self.step.load, self.step
        gaps = random.Random(self.prompter.workload.seed + 1)
        self.prompter.prepare(step.planned or 0)  # a duration step without a rate makes the rest as it goes
        watcher = asyncio.create_task(self.watch(say))
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        next_at = start
        try:
            while not self.cut:
                if step.requests is not None and self.sent >= step.requests:
                    break
                if step.duration_s is not None and time.perf_counter() - start >= step.duration_s:
                    break
                if load.rate is not None and (wait := next_at - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                if self.slots is not None:
                    await self.slots.acquire()
                task = asyncio.create_task(self.one(self.sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.sent += 1
                next_at += load.gap(gaps)
            while tasks and not self.cut:
                await asyncio.wait(set(tasks), timeout=WATCH_EVERY_S)
        finally:
            for task in (*tasks, watcher):
                task.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
        return summarize(self.records, load=load, slos=step.slos, cut_short=self.cut)


async def warm_up(session: aiohttp.ClientSession, target: Target, prompter: Prompter, say: Say) -> None:
    """One request before any is measured, as `vllm bench serve` sends its initial test prompt: connections, the
    gateway's route and the runtime's first-request work are not billed to the first step's tail."""
    shape = prompter.workload.shape(0)
    record = await send(session, target, prompter.prompt(0, shape), shape)
    if record.error:
        say(f"warm-up request failed: {record.error}")
    else:
        say(f"warm-up request answered in {(record.ended - record.sent) * 1000:.0f} ms (not counted)")


async def run_plan(plan: BenchPlan, *, api_key: str | None, say: Say = print) -> BenchResult:
    """Runs the plan's step, or its sweep to the end, saying progress as it goes."""
    began = time.perf_counter()
    target = Target(url=plan.url, model=plan.model, endpoint=plan.endpoint, api_key=api_key)
    prompter = Prompter(plan.workload, plan.tokenizer)
    connector = aiohttp.TCPConnector(limit=0)  # no client-side queue: concurrency is the load's to decide
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    steps: list[StepSummary] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(session, target, prompter, say)
        if plan.sweep is None:
            assert plan.load is not None
            step = Step(load=plan.load, requests=plan.requests, duration_s=plan.duration_s, slos=tuple(plan.slos))
            say(f"{plan.load.words()} against {target.address}")
            steps.append(await StepRun(session, target, prompter, step).run(say))
            return BenchResult(plan=plan, steps=steps, duration_s=time.perf_counter() - began)
        sweep, history = plan.sweep, list[Probe]()
        while (value := next_probe(sweep, history)) is not None:
            load = sweep.load(value)
            say(f"probe {len(history) + 1}: {load.words()}, {sweep.requests(value)} requests")
            step = Step(load=load, requests=sweep.requests(value), slos=tuple(sweep.slos))
            summary = await StepRun(session, target, prompter, step).run(say)
            probe = Probe.of(sweep, value, summary)
            history.append(probe)
            steps.append(summary)
            say(f"  {'pass' if probe.passed else 'FAIL'}: {describe_probe(probe)}")
        found = answer(sweep, history)
        say(found.statement)
    return BenchResult(plan=plan, steps=steps, sweep=found, duration_s=time.perf_counter() - began)


def describe_probe(probe: Probe) -> str:
    s = probe.summary
    checks = ", ".join(f"{c.slo.split('<=')[0]} {c.value_ms or 0:.0f} ms" for c in s.checks)
    notes = [n for n, on in (("saturated", s.saturated), ("cut short", s.cut_short)) if on]
    achieved = f"{s.achieved_rate:.3g}" if s.achieved_rate else "–"
    tail = f" ({', '.join(notes)})" if notes else ""
    return f"{s.completed} done, {s.errors} errors, completions {achieved} req/s, {checks}{tail}"
