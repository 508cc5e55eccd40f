"""Chat datasets' rows: each format detected and made into messages, a corrected column map, and every kind of
bad row named with its line, the first few kept and the rest counted; duplicates and rows shared with training."""

from __future__ import annotations

import json

import pytest

from studio.chats import Checker, ColumnMap, Format, RowError, detect, jsonl_rows, problems_of, to_messages

HELLO = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": HELLO}, Format.MESSAGES),
        (
            {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi there"}]},
            Format.SHAREGPT,
        ),
        ({"instruction": "Hello", "input": "", "output": "Hi there"}, Format.ALPACA),
        ({"prompt": "Hello", "completion": "Hi there"}, Format.PROMPT_COMPLETION),
    ],
)
def test_each_format_is_detected_and_becomes_the_same_messages(row: dict[str, object], fmt: Format) -> None:
    columns = detect(row)
    assert columns == ColumnMap(format=fmt)
    assert to_messages(row, columns) == HELLO


def test_alpaca_input_and_system_join_the_prompt() -> None:
    row = {"instruction": "Translate", "input": "Hallo", "output": "Hello", "system": "Be brief."}
    assert to_messages(row, ColumnMap(format=Format.ALPACA)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_a_corrected_column_map_reads_other_column_names() -> None:
    row = {"question": "Hello", "answer": "Hi there"}
    assert detect(row) is None  # no format fits these names: the user maps them
    columns = ColumnMap(format=Format.PROMPT_COMPLETION, columns={"prompt": "question", "completion": "answer"})
    assert to_messages(row, columns) == HELLO
    with pytest.raises(RowError, match=r"no 'answer' column \(it has 'question'\)"):
        to_messages({"question": "Hello"}, columns)


@pytest.mark.parametrize(
    ("messages", "said"),
    [
        ([], "no turns"),
        ([{"role": "user", "content": "Hello"}], "the last turn is not the assistant's"),
        ([{"role": "assistant", "content": "Hi"}], "turn 0 is from the assistant, where the user was expected"),
        ([*HELLO[:1], {"role": "assistant", "content": "  "}], "turn 1 (assistant) is empty"),
        ([*HELLO, {"role": "system", "content": "late"}], "turn 2 is a system turn: only the first turn may be"),
        ([HELLO[0], HELLO[0], HELLO[1]], "turn 1 is from the user, where the assistant was expected"),
    ],
)
def test_what_cannot_be_trained_on_is_said(messages: list[dict[str, str]], said: str) -> None:
    assert any(said in p for p in problems_of(messages)), problems_of(messages)


def test_a_system_turn_first_and_alternating_turns_are_fine() -> None:
    assert problems_of([{"role": "system", "content": "Be brief."}, *HELLO, *HELLO]) == []


def test_bad_rows_are_named_by_line_the_first_few_kept_and_the_rest_counted() -> None:
    lines = [
        json.dumps({"messages": HELLO}),
        "{not json",
        "",
        json.dumps({"messages": [{"role": "robot", "content": "beep"}]}),
        json.dumps({"messages": HELLO}),  # a duplicate of line 1
        json.dumps({"text": "no messages here"}),
        *[json.dumps({"messages": HELLO[:1]}) for _ in range(5)],  # lines 7–11: no assistant turn
    ]
    checker = Checker(ColumnMap(format=Format.MESSAGES), keep=4)
    for line, row in jsonl_rows(lines):
        checker.add(line, row)

    assert (checker.rows, checker.valid, checker.problem_count, checker.duplicates) == (10, 2, 8, 1)
    assert [(p.line, p.message) for p in checker.problems] == [
        (2, "not a JSON object: '{not json'"),
        (4, "messages[0] has the role 'robot': the roles are assistant, system, user"),
        (6, "no 'messages' column (it has 'text')"),
        (7, "the last turn is not the assistant's: there is nothing to train on"),
    ]
    assert checker.summary() == "10 rows: 2 fit to train on, 8 with problems, 1 duplicate"


def test_an_evaluation_split_counts_rows_it_shares_with_training() -> None:
    train = Checker(ColumnMap(format=Format.MESSAGES))
    train.add(1, {"messages": HELLO})
    held_out = Checker(ColumnMap(format=Format.MESSAGES), against=frozenset(train.seen))
    held_out.add(1, {"messages": HELLO})
    held_out.add(2, {"messages": [HELLO[0], {"role": "assistant", "content": "Howdy"}]})
    assert held_out.shared == 1
    assert held_out.summary() == "2 rows: 2 fit to train on, none with problems, 1 also in the training split"


def test_turns_of_the_wrong_kind_are_named() -> None:
    columns = ColumnMap(format=Format.SHAREGPT)
    with pytest.raises(RowError, match="conversations is str, not a list of turns"):
        to_messages({"conversations": "Hello"}, columns)
    with pytest.raises(RowError, match=r"conversations\[0\] is not a turn with 'from' and 'value'"):
        to_messages({"conversations": [{"role": "user", "content": "Hello"}]}, columns)
    with pytest.raises(RowError, match=r"output is int, not text"):
        to_messages({"instruction": "Hello", "output": 3}, ColumnMap(format=Format.ALPACA))
