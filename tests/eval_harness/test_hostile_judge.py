"""A judge misbehaving over a real socket: the key never leaks, no wait is unbounded, verdicts stay attributable.

Each test here failed on the code before issue 18 (a leaked key fragment, a 100,000 s sleep, a
read that never timed out, the last "[[N]]" taken as the rating, verdicts of another endpoint reused).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from eval_harness.judges import JudgeError, JudgeRequestError, JudgeSettings, OpenAICompatibleJudge
from eval_harness.mt_bench import data as mt_data
from eval_harness.mt_bench.judge import Grading, judge_answers, parse_score
from eval_harness.mt_bench.show import load_judgments
from lisa_formats.jsonl import read_jsonl
from tests.eval_harness.hostile_judge import KEY, HostileJudge, completion

QUESTION_IDS = (81, 91)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def settings(server: HostileJudge, **kw) -> JudgeSettings:
    return JudgeSettings(model="test-judge", base_url=server.base_url, **{"backoff_s": 0.01, "max_retries": 0, **kw})


def fragments(text: str, min_len: int = 8) -> list[str]:
    """Every piece of the key at least ``min_len`` long that appears in ``text``."""
    return [KEY[i:j] for i in range(len(KEY)) for j in range(i + min_len, len(KEY) + 1) if KEY[i:j] in text]


def finishes_within(seconds: float, call) -> BaseException | object:
    """``call()``'s exception or result, failing the test if it is still running after ``seconds``."""
    out: list = []

    def target():
        try:
            out.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: an unbounded wait"
    return out[0]


# ---------------------------------------------------------------- key leaks


@pytest.mark.parametrize("status, content_type, offsets", [
    (400, "application/json", range(0, 560)),  # a refusal: its body is cut at 500 characters
    (200, "text/html", range(0, 560)),  # not a chat completion: cut at 300
    (500, "text/plain", range(470, 530)),  # retries exhausted: the same cut at 500
])
def test_key_in_an_error_body_never_shows_at_any_offset(key, status, content_type, offsets):
    """The body is cut after redaction, so no offset of the key leaves a piece of it in the message."""
    server = HostileJudge(lambda s, h, body, n: s.reply(
        h, status, b"x" * (offsets[0] + n - 1) + KEY.encode() + b" tail", content_type))
    judge = OpenAICompatibleJudge(settings(server))
    try:
        for offset in offsets:  # request n puts the key at offsets[0] + n - 1
            with pytest.raises((JudgeRequestError, JudgeError)) as caught:
                judge.complete("system", "user")
            assert not fragments(str(caught.value)), (offset, str(caught.value)[-80:])
        assert len(server.requests) == len(offsets)
    finally:
        judge.close()
        server.close()


def _bench_and_answers(shared_data: Path):
    bench = mt_data.load(shared_data / "mt_bench")
    questions = [q for q in bench.questions if q.question_id in QUESTION_IDS]
    return bench, questions, {q.question_id: ["first answer", "second answer"] for q in questions}


def test_a_verdict_echoing_the_authorization_header_is_stored_redacted(key, shared_data, tmp_path):
    server = HostileJudge(lambda s, h, body, n: s.reply(
        h, 200, completion(f"Your header was {s.requests[n - 1]['auth']}. Rating: [[5]]", model=f"echo {KEY}")))
    bench, questions, answers = _bench_and_answers(shared_data)
    judge = OpenAICompatibleJudge(settings(server))
    out = tmp_path / "judgments.jsonl"
    try:
        counts = judge_answers(bench, questions, answers, out, model_id="m", grading=Grading(judge))
    finally:
        judge.close()
        server.close()
    assert counts["stored"] == 4
    text = out.read_text()
    assert KEY not in text and not fragments(text) and "Bearer ***" in text
    assert all(r["score"] == 5 for r in read_jsonl(out))
    assert not fragments(" ".join(judge.served_models()))  # the model name the server replied with, redacted too


def test_the_report_redacts_a_key_stored_before_redaction_existed(key, tmp_path, shared_data):
    from eval_harness.report.collect import load_report_data
    from tests.eval_harness.report_fixture import write_results

    info = write_results(tmp_path, shared_data)
    judgments = next((info["out"] / "mt_bench" / "model_judgment").glob("*_single.jsonl"))
    records = read_jsonl(judgments)
    for record in records:
        record["judgment"] = f"leaked {KEY} " + record["judgment"]
    judgments.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_report_data(info["out"])
    shown = [ex.judgment for run in data.runs if run.mt_bench for ex in run.mt_bench.examples]
    assert shown and not any(fragments(text) for text in shown)


# ---------------------------------------------------------------- bounded waits


def test_a_huge_retry_after_stops_instead_of_sleeping():
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 429, b'{"error": "slow down"}', headers=[("Retry-After", "100000")]))
    judge = OpenAICompatibleJudge(settings(server, max_retries=3, max_retry_after_s=5))
    try:
        outcome = finishes_within(10, lambda: judge.complete("system", "user"))
    finally:
        judge.close()
        server.close()
    assert isinstance(outcome, JudgeError), outcome
    assert "Retry-After '100000'" in str(outcome) and "max_retry_after_s" in str(outcome)
    assert len(server.requests) == 1


def test_a_short_retry_after_is_honoured():
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 503, b"busy", headers=[("Retry-After", "0.3")]) if n == 1
                          else s.reply(h, 200, completion("Rating: [[7]]")))
    judge = OpenAICompatibleJudge(settings(server, max_retries=2))
    start = time.monotonic()
    try:
        assert judge.complete("system", "user") == "Rating: [[7]]"
    finally:
        judge.close()
        server.close()
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("headers_too", [False, True], ids=["body-drip", "header-drip"])
def test_a_server_dripping_one_byte_at_a_time_meets_the_deadline(headers_too):
    """Each byte arrives well within the read timeout; only a deadline on the whole reply ends it."""
    payload = completion("Rating: [[7]]" + " " * 2000)
    server = HostileJudge(lambda s, h, body, n: s.drip(h, payload, 0.05, headers_too))
    judge = OpenAICompatibleJudge(settings(server, timeout_s=2, deadline_s=1.0, max_retries=1))
    start = time.monotonic()
    try:
        outcome = finishes_within(15, lambda: judge.complete("system", "user"))
    finally:
        judge.close()
        server.close()
    assert isinstance(outcome, JudgeError) and "within 1 s (deadline_s)" in str(outcome), outcome
    assert time.monotonic() - start < 6 and len(server.requests) == 2  # two attempts of about 1 s each


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize("verdict, score", [
    ("[[2]] ... a perfect answer would earn [[10]]", 2.0),  # FastChat's re.search: the first rating
    ("Rating: [2]. Ideal: [9]", 2.0),
    ("Rating: [[11]] then [[4]]", -1),  # the first rating decides, and 11 is none
])
def test_the_first_rating_is_the_score(verdict, score):
    assert parse_score(verdict) == score


def test_verdicts_of_another_endpoint_are_not_reused(shared_data, tmp_path):
    """Same --judge-model, new --judge-base-url: everything is judged again, and each score names its endpoint."""
    bench, questions, answers = _bench_and_answers(shared_data)
    out = tmp_path / "judgments.jsonl"
    servers = [HostileJudge(lambda s, h, body, n, r=r: s.reply(h, 200, completion(f"Rating: [[{r}]]"))) for r in (3, 8)]
    try:
        for server in servers:
            judge = OpenAICompatibleJudge(settings(server))
            try:
                judge_answers(bench, questions, answers, out, model_id="m", grading=Grading(judge))
            finally:
                judge.close()
        assert [len(s.requests) for s in servers] == [4, 4]
        for server, score in zip(servers, (3, 8)):
            mine = load_judgments(out, "m", "test-judge", set(QUESTION_IDS), server.base_url)
            assert len(mine) == 4 and {j["score"] for j in mine} == {score}
    finally:
        for server in servers:
            server.close()
