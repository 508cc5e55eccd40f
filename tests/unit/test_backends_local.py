"""The local backend's pure helpers: restart backoff and reading the end of a log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.backends.local import backoff_s, tail_lines


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]
)
def test_backoff_doubles_from_one_second_and_stops_at_a_minute(failures: int, delay: float) -> None:
    assert backoff_s(failures) == delay


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    ("text", "n", "lines"),
    [
        ("a\nb\nc\nd\n", 2, ["c", "d"]),
        ("a\nb\nc\nd", 2, ["c", "d"]),  # no final newline
        ("a\nb\n", 10, ["a", "b"]),  # fewer lines than asked
        ("only\n", 1, ["only"]),
        ("", 5, []),
        ("a\n\nb\n", 3, ["a", "", "b"]),  # blank lines are lines
    ],
)
def test_tail_lines_gives_the_last_n_lines(tmp_path: Path, text: str, n: int, lines: list[str]) -> None:
    assert tail_lines(write(tmp_path / "replica-0.log", text), n) == lines


def test_a_missing_log_has_no_lines(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "never-written.log", 20) == []


def test_the_tail_of_a_file_much_larger_than_one_read_block(tmp_path: Path) -> None:
    path = write(tmp_path / "big.log", "".join(f"line {i:05d} {'x' * 40}\n" for i in range(5000)))
    assert path.stat().st_size > 8 * 8192

    assert tail_lines(path, 3) == [f"line {i:05d} {'x' * 40}" for i in (4997, 4998, 4999)]


def test_last_lines_longer_than_one_read_block_come_back_whole(tmp_path: Path) -> None:
    long = ["a" * 10000, "b" * 20000, "c" * 9000]
    path = write(tmp_path / "long.log", "short\n" * 100 + "\n".join(long) + "\n")

    assert tail_lines(path, 3) == long
    assert tail_lines(path, 4) == ["short", *long]


def test_bytes_that_are_not_utf8_are_replaced_not_raised(tmp_path: Path) -> None:
    path = write(tmp_path / "bin.log", b"ok\nbad \xff\xfe here\n")

    assert tail_lines(path, 2) == ["ok", "bad \ufffd\ufffd here"]


def test_asking_for_zero_lines_gives_none(tmp_path: Path) -> None:
    assert tail_lines(write(tmp_path / "replica-0.log", "a\nb\n"), 0) == []
