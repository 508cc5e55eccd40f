"""Chat datasets' rows: the four formats people bring, how a row becomes OpenAI ``messages``, and what is wrong
with a row, by line.

Formats (``detect`` tells them by a row's keys; a ``ColumnMap`` says which column is which, so a user can correct
it): OpenAI ``messages`` ({role, content} turns), ShareGPT (``conversations`` of {from, value}), alpaca
(instruction / input / output, optional system) and prompt / completion. Every format becomes ``messages``; a
row is fit to train on when its roles are known, a system turn comes only first, user and assistant alternate from
the user, no turn is empty, and the last turn is the assistant's (what is trained on). ``Checker`` reads rows one at
a time (a 100k-row file is never held whole), keeps the first problems with their line numbers and counts the
rest, and counts duplicate rows and rows an evaluation split shares with the training split.

Pure: values in, values out.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict


class Format(enum.StrEnum):
    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"


ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

# Each format's parts, and the column each is read from unless the user says otherwise. Optional parts are marked.
DEFAULT_COLUMNS: dict[Format, dict[str, str]] = {
    Format.MESSAGES: {"messages": "messages"},
    Format.SHAREGPT: {"conversations": "conversations"},
    Format.ALPACA: {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    Format.PROMPT_COMPLETION: {"prompt": "prompt", "completion": "completion"},
}
OPTIONAL = {"input", "system"}


class ColumnMap(BaseModel):
    """Which column holds each part of ``format`` (``DEFAULT_COLUMNS`` for the parts not named)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Format
    columns: dict[str, str] = {}

    def column(self, part: str) -> str:
        return self.columns.get(part, DEFAULT_COLUMNS[self.format][part])

    def required(self) -> list[str]:
        """The columns a row must have."""
        return [self.column(p) for p in DEFAULT_COLUMNS[self.format] if p not in OPTIONAL]


def detect(keys: Iterable[str]) -> ColumnMap | None:
    """The format a row with these keys is in, with the default columns; None when none fits (the user maps it)."""
    present = set(keys)
    for fmt in (Format.MESSAGES, Format.SHAREGPT, Format.ALPACA, Format.PROMPT_COMPLETION):
        candidate = ColumnMap(format=fmt)
        if set(candidate.required()) <= present:
            return candidate
    return None


class RowError(ValueError):
    """What is wrong with one row, in words."""


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{where} is {type(value).__name__}, not text")
    return value


def _turns(value: Any, where: str, role_key: str, content_key: str, roles: Mapping[str, str]) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise RowError(f"{where} is {type(value).__name__ if value is not None else 'missing'}, not a list of turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise RowError(f"{where}[{i}] is not a turn with {role_key!r} and {content_key!r}")
        role = roles.get(str(turn[role_key]))
        if role is None:
            known = ", ".join(sorted(roles))
            raise RowError(f"{where}[{i}] has the role {turn[role_key]!r}: the roles are {known}")
        turns.append({"role": role, "content": _text(turn[content_key], f"{where}[{i}].{content_key}")})
    return turns


def to_messages(row: Mapping[str, Any], columns: ColumnMap) -> list[dict[str, str]]:
    """The row as OpenAI messages; RowError naming what is missing or of the wrong kind."""
    missing = [c for c in columns.required() if c not in row]
    if missing:
        raise RowError(
            f"no {', '.join(repr(c) for c in missing)} column (it has {', '.join(map(repr, row)) or 'none'})"
        )
    if columns.format is Format.MESSAGES:
        name = columns.column("messages")
        return _turns(row[name], name, "role", "content", {r: r for r in ROLES})
    if columns.format is Format.SHAREGPT:
        name = columns.column("conversations")
        return _turns(row[name], name, "from", "value", SHAREGPT_ROLES)
    if columns.format is Format.ALPACA:
        system = _text(row.get(columns.column("system")), columns.column("system"))
        instruction = _text(row[columns.column("instruction")], columns.column("instruction"))
        extra = _text(row.get(columns.column("input")), columns.column("input"))
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        answer = _text(row[columns.column("output")], columns.column("output"))
        system_turn = [{"role": "system", "content": system}] if system.strip() else []
        return [*system_turn, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    prompt = _text(row[columns.column("prompt")], columns.column("prompt"))
    answer = _text(row[columns.column("completion")], columns.column("completion"))
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def problems_of(messages: list[dict[str, str]]) -> list[str]:
    """Why ``messages`` cannot be trained on (empty: they can)."""
    found = []
    if not messages:
        return ["no turns"]
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for i, turn in enumerate(messages):
        if not turn["content"].strip():
            found.append(f"turn {i} ({turn['role']}) is empty")
        if turn["role"] == "system" and i > 0:
            found.append(f"turn {i} is a system turn: only the first turn may be")
    expected = ["user", "assistant"]
    for i, turn in enumerate(body):
        if turn["role"] != "system" and turn["role"] != expected[i % 2]:
            at = i + len(messages) - len(body)
            found.append(f"turn {at} is from the {turn['role']}, where the {expected[i % 2]} was expected")
            break
    if body and body[-1]["role"] != "assistant":
        found.append("the last turn is not the assistant's: there is nothing to train on")
    return found


def fingerprint(messages: list[dict[str, str]]) -> str:
    """The same conversation, the same fingerprint (for duplicates and split overlap)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based, in the file (a JSONL line, a CSV row after the header, a record's position)
    message: str


@dataclass
class Checker:
    """Reads rows one at a time: how many, how many fit to train on, the first ``keep`` problems with their line
    numbers (the rest counted), and duplicate rows. ``against`` (the training split's fingerprints) counts the
    rows of an evaluation split that also appear in training."""

    columns: ColumnMap
    keep: int = 20
    against: frozenset[str] = frozenset()
    rows: int = 0
    valid: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    duplicates: int = 0
    shared: int = 0
    seen: set[str] = field(default_factory=set)

    def add(self, line: int, row: Any) -> list[dict[str, str]] | None:
        """Check one row (a mapping; anything else, such as the text of a line that is not JSON, is a problem);
        its messages when it is fit to train on."""
        self.rows += 1
        try:
            if not isinstance(row, Mapping):
                raise RowError(f"not a JSON object: {str(row)[:80]!r}")
            messages = to_messages(row, self.columns)
            wrong = problems_of(messages)
            if wrong:
                raise RowError("; ".join(wrong))
        except RowError as exc:
            self.problem_count += 1
            if len(self.problems) < self.keep:
                self.problems.append(Problem(line, str(exc)))
            return None
        self.valid += 1
        mark = fingerprint(messages)
        if mark in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(mark)
        if mark in self.against:
            self.shared += 1
        return messages

    def summary(self) -> str:
        bad = f"{self.problem_count} with problems" if self.problem_count else "none with problems"
        said = [f"{self.rows} rows: {self.valid} fit to train on, {bad}"]
        if self.duplicates:
            said.append(f"{self.duplicates} duplicate{'s' if self.duplicates != 1 else ''}")
        if self.shared:
            said.append(f"{self.shared} also in the training split")
        return ", ".join(said)


def jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object — or the line's text when it is not JSON) for each non-blank line."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except ValueError:
            yield number, text.rstrip("\n")
