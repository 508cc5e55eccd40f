"""Reading each benchmark client's own report (benchmarks/client_compat.py): the shapes below are cut from real reports
of `vllm bench serve` 0.33.0, AIPerf 0.13.0 and GuideLLM 0.8.1 run against the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.client_compat import ClientRun, Metered, read_aiperf, read_guidellm, read_vllm, row, run_client

RUN = ClientRun(client="x", load="concurrency 8")

VLLM = {
    "num_prompts": 100,
    "completed": 97,
    "failed": 3,
    "total_input_tokens": 14444,
    "total_output_tokens": 863,
    "p50_ttft_ms": 111.6,
    "p99_ttft_ms": 303.5,
    "p50_itl_ms": 23.4,
    "p99_itl_ms": 116.5,
}

AIPERF = {
    "request_count": {"unit": "requests", "avg": 38.0},
    "error_request_count": {"unit": "requests", "avg": 2.0},
    "time_to_first_token": {"unit": "ms", "avg": 86.3, "p50": 71.1, "p90": 132.6, "p99": 217.1},
    "inter_token_latency": {"unit": "ms", "avg": 21.1, "p50": 18.5, "p99": 49.4},
    "total_isl": {"unit": "tokens", "avg": 5120.0},
    "total_osl": {"unit": "tokens", "avg": 235.0},
}


def guidellm_report(successful: int, errored: int, incomplete: int) -> dict[str, object]:
    request = {"prompt_tokens": 128, "output_tokens": 16}
    pct = {"p50": 70.0, "p90": 90.0, "p99": 210.0}
    return {
        "benchmarks": [
            {
                "requests": {
                    "successful": [request] * successful,
                    "errored": [request] * errored,
                    "incomplete": [request] * incomplete,
                },
                "metrics": {
                    "time_to_first_token_ms": {"successful": {"percentiles": pct}},
                    "inter_token_latency_ms": {"successful": {"percentiles": {"p50": 20.0, "p99": 40.0}}},
                },
            }
        ]
    }


def test_vllm_report_gives_counts_percentiles_and_tokens() -> None:
    run = read_vllm(RUN, VLLM)
    assert (run.sent, run.completed, run.failed) == (100, 97, 3)
    assert run.ttft_ms == (111.6, 303.5)
    assert run.itl_ms == (23.4, 116.5)
    assert (run.prompt_tokens, run.output_tokens) == (14444, 863)


def test_vllm_report_without_a_failed_field_counts_the_prompts_not_completed() -> None:
    older = {k: v for k, v in VLLM.items() if k != "failed"}
    assert read_vllm(RUN, older).failed == 3


def test_aiperf_report_counts_errors_apart_from_successes() -> None:
    run = read_aiperf(RUN, AIPERF)
    assert (run.sent, run.completed, run.failed) == (40, 38, 2)
    assert run.ttft_ms == (71.1, 217.1)
    assert run.itl_ms == (18.5, 49.4)
    assert (run.prompt_tokens, run.output_tokens) == (5120, 235)


def test_aiperf_report_without_errors_has_no_error_count() -> None:
    clean = {k: v for k, v in AIPERF.items() if k != "error_request_count"}
    run = read_aiperf(RUN, clean)
    assert (run.sent, run.completed, run.failed) == (38, 38, 0)


def test_guidellm_report_counts_errored_and_incomplete_requests_as_failed() -> None:
    run = read_guidellm(RUN, guidellm_report(successful=6, errored=1, incomplete=1))
    assert (run.sent, run.completed, run.failed) == (8, 6, 2)
    assert run.ttft_ms == (70.0, 210.0)
    assert run.itl_ms == (20.0, 40.0)
    assert (run.prompt_tokens, run.output_tokens) == (6 * 128, 6 * 16)  # of the completed requests only


def test_a_row_shows_the_client_and_the_gateway_side_by_side() -> None:
    line = row(read_vllm(RUN, VLLM), Metered(rows=100, served=97, cancelled=0, errors=3, prompt_tokens=14000))
    assert "100/97/3" in line
    assert "112/304" in line
    assert "100: 97/0/3" in line
    assert "14000/0" in line


def test_a_client_that_did_not_run_says_why(tmp_path: Path) -> None:
    missing = run_client([str(tmp_path / "no-such-cli")], tmp_path / "log", {}, timeout=10)
    assert missing is not None
    assert missing.startswith("not installed")
    script = "print('bad tokenizer'); raise SystemExit(3)"
    failing = run_client([sys.executable, "-c", script], tmp_path / "log", {}, timeout=30)
    assert failing is not None
    assert failing.startswith("exit 3")
    assert "bad tokenizer" in failing
    shown = row(ClientRun(client="AIPerf", load="4 req/s", problem=failing), Metered(rows=0))
    assert "DID NOT RUN: exit 3" in shown
    assert "gateway rows: 0" in shown
