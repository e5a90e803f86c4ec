"""Judging semantics against a loopback chat-completions judge (issue 19).

Errors are stored and counted, never averaged; back-offs are bounded and stop on Ctrl-C; caches
are content-addressed; failures are re-asked on request; several rounds of one item resolve to
the latest valid verdict; the overall score is FastChat's; judge repeats widen the interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from eval_harness.judges import JudgeCancelled, JudgeError, JudgeSettings, OpenAICompatibleJudge
from eval_harness.judges.openai_compat import retry_after_seconds
from eval_harness.mt_bench import data as mt_data
from eval_harness.mt_bench.judge import ERROR_JUDGMENT, Grading, judge_answers
from eval_harness.mt_bench.pairwise import judge_pairs, summarise_pairs
from eval_harness.mt_bench.run import judge_all
from eval_harness.mt_bench.show import load_judgments, repeat_scores, summarise
from eval_harness.report import stats
from lisa_formats.jsonl import read_jsonl
from tests.eval_harness.hostile_judge import HostileJudge, completion

QUESTION_IDS = (81, 91, 111)  # writing, roleplay, math (reference answer)


@pytest.fixture(scope="module")
def bench(shared_data):
    return mt_data.load(shared_data / "mt_bench")


def questions_of(bench, ids=QUESTION_IDS):
    return [q for q in bench.questions if q.question_id in ids]


def answers_for(questions, tag="answer"):
    return {q.question_id: [f"{tag} one to {q.question_id}", f"{tag} two to {q.question_id}"] for q in questions}


def grading(server: HostileJudge, concurrency: int = 1, rejudge_failed: bool = False, **kw) -> Grading:
    settings = JudgeSettings(model="test-judge", base_url=server.base_url,
                             **{"backoff_s": 0.01, "max_retries": 1, **kw})
    return Grading(OpenAICompatibleJudge(settings), concurrency=concurrency, rejudge_failed=rejudge_failed)


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def ok(s, h, body, n, rating=7, model="test-judge-0613"):
    s.reply(h, 200, completion(f"Fine. Rating: [[{rating}]]", model=model))


# ---------------------------------------------------------------- errors are stored, the run goes on


def test_a_persistently_failing_item_is_stored_as_an_error_and_the_run_continues(bench, tmp_path):
    questions = questions_of(bench, (81, 91))
    answers = answers_for(questions)
    answers[81] = ["POISON", "poisoned too"]  # both turns of 81 carry it (turn 2 shows turn 1)

    def behave(s, h, body, n):
        if "POISON" in user_text(body):
            return s.reply(h, 500, b'{"error": "internal"}')
        ok(s, h, body, n, rating=6)

    server = HostileJudge(behave)
    g = grading(server)
    try:
        summary = judge_all(bench, questions, answers, tmp_path, "m", g, None)
    finally:
        g.judge.close()
        server.close()
    records = read_jsonl(tmp_path / "model_judgment" / "test-judge_single.jsonl")
    errors = [r for r in records if "error" in r]
    assert len(records) == 4 and len(errors) == 2 and {r["question_id"] for r in errors} == {81}
    assert all(r["judgment"] == ERROR_JUDGMENT and r["score"] == -1 and "HTTP 500" in r["error"] for r in errors)
    assert summary["judge_errors"] == 2 and summary["parse_failures"] == 0
    assert summary["missing_judgments"] == 0 and summary["complete"] is True  # judged, with errors: not missing
    assert summary["turn1"] == summary["turn2"] == summary["overall"] == 6  # errors never averaged
    assert summary["judge"]["served_by"] == ["test-judge-0613"]  # what the server said really judged
    assert {r["judge_served_model"] for r in records} == {None, "test-judge-0613"}  # per verdict; None for errors


def test_a_judge_that_never_answers_stops_the_run_and_stores_nothing(bench, tmp_path):
    questions = questions_of(bench)
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 503, b"down"))
    g = grading(server, concurrency=2)
    out = tmp_path / "j.jsonl"
    try:
        with pytest.raises(JudgeError, match="HTTP 503.*the judge looks down"):
            judge_answers(bench, questions, answers_for(questions), out, model_id="m", grading=g)
    finally:
        g.judge.close()
        server.close()
    # the breaker trips at 4 failed items (concurrency + 2), plus the one in flight then: not all 6 items
    assert read_jsonl(out) == [] and len(server.requests) <= 2 * 5


# ---------------------------------------------------------------- bounded, interruptible waits


def test_retry_after_parses_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0  # in the past
    assert retry_after_seconds("soon") is None and retry_after_seconds("nan") is None


def test_retry_after_as_an_http_date_is_honoured_and_bounded():
    def behave(s, h, body, n):
        if n == 1:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1-2 s
            return s.reply(h, 429, b"slow down", headers=[("Retry-After", when)])
        ok(s, h, body, n)

    server = HostileJudge(behave)
    judge = OpenAICompatibleJudge(JudgeSettings(model="test-judge", base_url=server.base_url, backoff_s=0.01))
    start = time.monotonic()
    try:
        assert judge.complete("system", "user").endswith("[[7]]")
        assert time.monotonic() - start >= 0.9  # our own back-off would have been 0.01 s
        far = email.utils.formatdate(time.time() + 3600, usegmt=True)
        server.behave = lambda s, h, body, n: s.reply(h, 503, b"later", headers=[("Retry-After", far)])
        start = time.monotonic()
        with pytest.raises(JudgeError, match="max_retry_after_s"):
            judge.complete("system", "user")
        assert time.monotonic() - start < 5
    finally:
        judge.close()
        server.close()


def test_408_is_retried():
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 408, b"request timeout") if n == 1 else ok(s, h, body, n))
    judge = OpenAICompatibleJudge(JudgeSettings(model="test-judge", base_url=server.base_url, backoff_s=0.01))
    try:
        assert judge.complete("system", "user").endswith("[[7]]")
    finally:
        judge.close()
        server.close()
    assert len(server.requests) == 2


def _busy_for_a_minute():
    return HostileJudge(lambda s, h, body, n: s.reply(h, 503, b"busy", headers=[("Retry-After", "60")]))


def test_cancel_ends_a_back_off_within_seconds():
    server = _busy_for_a_minute()
    judge = OpenAICompatibleJudge(JudgeSettings(model="test-judge", base_url=server.base_url, max_retries=3))
    cancelled = {}

    def cancel_once_the_request_was_answered() -> None:  # not a fixed delay: a loaded machine starts later
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the "busy" reply is in and its 60 s back-off has begun
        cancelled["at"] = time.monotonic()
        judge.cancel()

    threading.Thread(target=cancel_once_the_request_was_answered, daemon=True).start()
    try:
        with pytest.raises(JudgeCancelled):
            judge.complete("system", "user")
    finally:
        judge.close()
        server.close()
    assert time.monotonic() - cancelled["at"] < 5 and len(server.requests) == 1  # not the 60 s Retry-After


def test_ctrl_c_during_a_back_off_stops_the_run_within_seconds(bench, tmp_path):
    questions = questions_of(bench)
    server = _busy_for_a_minute()
    g = grading(server, concurrency=2, max_retries=3)
    out = tmp_path / "j.jsonl"
    sent = {}

    def interrupt_once_both_requests_wait() -> None:  # not a fixed delay: a loaded machine starts later
        deadline = time.monotonic() + 60
        while len(server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # both requests are now answered "busy" and their back-offs (60 s) have begun
        sent["at"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C raises KeyboardInterrupt even where the test run started with SIGINT ignored (launched in
    # the background by a non-interactive shell, where Python installs no handler of its own)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt_once_both_requests_wait, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            judge_answers(bench, questions, answers_for(questions), out, model_id="m", grading=g)
    finally:
        timer.join(timeout=61)
        signal.signal(signal.SIGINT, previous)
        g.judge.close()
        server.close()
    assert time.monotonic() - sent["at"] < 5, "Ctrl-C waited out the back-off"
    assert read_jsonl(out) == [] and len(server.requests) == 2  # the two in flight, no retry after Ctrl-C


# ---------------------------------------------------------------- content-addressed caches


def _judge(bench, questions, answers, out, server, **kw) -> dict:
    g = grading(server, **kw)
    try:
        return judge_answers(bench, questions, answers, out, model_id="m", grading=g)
    finally:
        g.judge.close()


def test_changed_answers_or_references_are_judged_again_unchanged_ones_are_not(bench, tmp_path):
    questions = questions_of(bench, (81, 111))
    answers, out = answers_for(questions), tmp_path / "j.jsonl"
    server = HostileJudge(ok)
    try:
        assert _judge(bench, questions, answers, out, server)["stored"] == 4
        assert _judge(bench, questions, answers, out, server)["stored"] == 0  # unchanged: all cached
        answers[81] = [answers[81][0], "a regenerated second turn"]
        assert _judge(bench, questions, answers, out, server)["stored"] == 1  # only 81's turn 2 shows it
        refs = dict(bench.references)
        refs[111] = ("a corrected reference", refs[111][1])
        counts = _judge(dataclasses.replace(bench, references=refs), questions, answers, out, server)
        assert counts["stored"] == 2  # both turns of 111 show reference 1
        assert len(server.requests) == 7
        current = load_judgments(out, "m", "test-judge", {81, 111}, keys=counts["keys"])
        assert len(current) == 4 and all(r["judge_key"] for r in current)
        # records from before content keys (no judge_key) never match: judged once more, then cached
        out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "judge_key"}) + "\n"
                               for r in read_jsonl(out)))
        assert _judge(bench, questions, answers, out, server)["stored"] == 4
        assert _judge(bench, questions, answers, out, server)["stored"] == 0
        # another model with word-for-word the same answers is judged on its own, not from m's cache
        g = grading(server)
        try:
            assert judge_answers(bench, questions, answers, out, model_id="m2", grading=g)["stored"] == 4
        finally:
            g.judge.close()
    finally:
        server.close()


def test_a_retrained_pairwise_baseline_is_judged_again(bench, tmp_path):
    questions = questions_of(bench, (81,))
    mine, out = answers_for(questions), tmp_path / "pair.jsonl"
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 200, completion("[[A]]")))

    def pairs(baseline):
        g = grading(server)
        try:
            return judge_pairs(bench, questions, mine, baseline, out, model_id="m", baseline_id="base", grading=g)
        finally:
            g.judge.close()

    try:
        assert pairs(answers_for(questions, "old baseline"))["stored"] == 2
        assert pairs(answers_for(questions, "old baseline"))["stored"] == 0
        assert pairs(answers_for(questions, "retrained baseline"))["stored"] == 2
    finally:
        server.close()
    assert len(server.requests) == 8  # two orders per turn
    assert summarise_pairs(out, "m", "base", "test-judge", {81})["missing"] == 0


def test_rejudge_failed_re_asks_parse_failures_and_errors_only(bench, tmp_path):
    questions = questions_of(bench, (81, 91))
    answers, out = answers_for(questions), tmp_path / "j.jsonl"
    q81, q91 = (next(q.turns[0] for q in questions if q.question_id == i) for i in (81, 91))

    def flawed(s, h, body, n):
        text = user_text(body)
        if q81 in text and "Conversation with User" not in text:
            return s.reply(h, 200, completion("I cannot rate this."))  # parse failure
        if q91 in text and "Conversation with User" in text:
            return s.reply(h, 500, b"internal")  # an error after the retries
        ok(s, h, body, n)

    server = HostileJudge(flawed)
    try:
        _judge(bench, questions, answers, out, server)
        first = summarise(load_judgments(out, "m", "test-judge", {81, 91}), questions)
        assert (first["parse_failures"], first["judge_errors"]) == (1, 1)
        asked = len(server.requests)
        assert _judge(bench, questions, answers, out, server)["stored"] == 0  # without the flag: kept as they are
        server.behave = ok
        counts = _judge(bench, questions, answers, out, server, rejudge_failed=True)
        assert counts["stored"] == 2 and len(server.requests) == asked + 2  # the two failed items, nothing else
    finally:
        server.close()
    final = summarise(load_judgments(out, "m", "test-judge", {81, 91}), questions)
    assert (final["parse_failures"], final["judge_errors"], final["n_judgments"]) == (0, 0, 4)


# ---------------------------------------------------------------- reading and scoring


def _record(qid, turn, score, judgment=None):
    return {"question_id": qid, "model": "m", "judge": ["gpt-4", "single-v1" + ("-multi-turn" if turn == 2 else "")],
            "user_prompt": "...", "judgment": judgment or f"Rating: [[{score}]]", "score": score, "turn": turn,
            "tstamp": 0.0}


def test_several_rounds_of_one_item_give_the_latest_valid_verdict_with_a_warning(tmp_path, caplog):
    out = tmp_path / "gpt-4_single.jsonl"
    rounds = [_record(81, 1, 3), _record(91, 1, 5), _record(81, 1, 8), _record(91, 1, -1, "no rating"),
              _record(81, 2, 4)]
    out.write_text("".join(json.dumps(r) + "\n" for r in rounds))
    with caplog.at_level(logging.WARNING):
        chosen = load_judgments(out, "m", "gpt-4", {81, 91})
    assert sorted((r["question_id"], r["turn"], r["score"]) for r in chosen) == [(81, 1, 8), (81, 2, 4), (91, 1, 5)]
    assert "2 item(s) have several judgments" in caplog.text


def test_overall_is_fastchat_show_results_mean_of_valid_ratings(bench, tmp_path, capsys):
    from fastchat.llm_judge.show_result import display_result_single

    records = [_record(81, 1, 2), _record(91, 1, 4), _record(81, 2, 10), _record(91, 2, -1, "no rating")]
    out = tmp_path / "gpt-4_single.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = summarise(load_judgments(out, "m", "gpt-4", {81, 91}), questions_of(bench, (81, 91)))
    assert summary["overall"] == pytest.approx(16 / 3)  # FastChat: mean of 2, 4, 10
    assert summary["overall_turn_mean"] == pytest.approx(6.5)  # (3 + 10) / 2: labelled, not the headline
    assert stats.mt_bench_overall(np.array([2, 4.0]), np.array([10, np.nan])) == pytest.approx(16 / 3)
    capsys.readouterr()
    display_result_single(argparse.Namespace(input_file=str(out), bench_name="mt_bench", judge_model="gpt-4",
                                             model_list=None))
    average = capsys.readouterr().out.split("Average")[1]
    assert float(re.search(r"^m\s+([\d.]+)$", average, re.M).group(1)) == pytest.approx(summary["overall"], abs=1e-5)


def test_judge_repeats_widen_the_interval_when_the_judge_disagrees_with_itself():
    """Every question averages 6 over two repeats (3 and 9): only the judge's spread is uncertain."""
    judgments = [{"question_id": q, "turn": t, "repeat": r, "score": (3.0, 9.0)[(q + t + r) % 2]}
                 for q in range(30) for t in (1, 2) for r in (0, 1)]
    turn1, turn2 = repeat_scores(judgments, list(range(30)), repeats=2)
    assert turn1.shape == (30, 2) and not np.isnan(turn1).any()
    without = stats.bootstrap_mt_bench(turn1.mean(axis=1), turn2.mean(axis=1), resamples=500)
    with_repeats = stats.bootstrap_mt_bench(turn1, turn2, resamples=500)
    assert (without.low, without.high) == (6.0, 6.0)
    assert with_repeats.low < 6.0 < with_repeats.high
    # a judge that never disagrees with itself adds nothing
    steady = stats.bootstrap_mt_bench(np.full((30, 2), 6.0), np.full((30, 2), 6.0), resamples=500)
    assert (steady.low, steady.high) == (6.0, 6.0)


def test_a_pair_the_judge_never_answers_is_stored_as_an_error(bench, tmp_path):
    questions = questions_of(bench, (81, 91))
    mine, out = answers_for(questions), tmp_path / "pair.jsonl"
    mine[81] = ["POISON", "poisoned too"]
    server = HostileJudge(lambda s, h, body, n: s.reply(h, 500, b"internal") if "POISON" in user_text(body)
                          else s.reply(h, 200, completion("[[C]]")))
    g = grading(server)
    try:
        counts = judge_pairs(bench, questions, mine, answers_for(questions, "base"), out, model_id="m",
                             baseline_id="base", grading=g)
    finally:
        g.judge.close()
        server.close()
    assert (counts["stored"], counts["errors"]) == (4, 2)
    result = summarise_pairs(out, "m", "base", "test-judge", {81, 91})
    assert (result["judge_errors"], result["missing"], result["tie"], result["win_rate"]) == (2, 0, 2, 0.0)
