"""MT-Bench: answers from a tiny model, judged by an OpenAI-compatible server on loopback.

The judge server speaks the real ``/v1/chat/completions`` protocol over a socket and
answers deterministically: the score of turn ``t`` of question ``q`` is ``expected_score(q, t)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval_harness.mt_bench import JudgeError, JudgeSettings, parse_score, run_mt_bench
from eval_harness.mt_bench import data as mt_data
from eval_harness.mt_bench.judge import single_prompt
from lisa_formats.jsonl import JsonlAppender, read_jsonl

PLANTED_KEY = "sk-planted-TEST-KEY-0123456789abcdef"
# one question from each of three categories: two generation temperatures, one needs a reference
QUESTION_IDS = (81, 91, 111)
CATEGORIES = {81: "writing", 91: "roleplay", 111: "math"}
BASELINE_TEXT = "BASELINE ANSWER"


def expected_score(question_id: int, turn: int) -> int:
    return (question_id * 3 + turn) % 10 + 1


# ---------------------------------------------------------------- fake judge


class JudgeServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 with scripted behaviour."""

    def __init__(self, questions: dict[int, str]):
        self.questions = questions  # question_id -> turn-1 text, to recognise what is being judged
        self.requests: list[dict] = []
        self.fail_first = 0  # answer the first N requests with HTTP 500
        self.status = 200  # a fixed error status for every request (e.g. 401)
        self.unparsable: set[int] = set()  # question_ids whose verdict carries no rating
        self.delay_s = 0.0
        self.slow_first = 0  # the first N requests take 1 s (longer than a test's client timeout)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    n = len(server.requests)
                time.sleep(1.0 if n <= server.slow_first else server.delay_s)
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                if server.status != 200:
                    # like OpenAI, echo the key back: the client must not show it
                    return self.reply(server.status, {"error": {"message": f"Incorrect API key: {self.headers.get('Authorization')}"}})
                if n <= server.fail_first:
                    return self.reply(500, {"error": {"message": "overloaded"}})
                self.reply(200, server.completion(body))

            def reply(self, status, payload):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def completion(self, body: dict) -> dict:
        user = body["messages"][-1]["content"]
        question_id = next(q for q, text in self.questions.items() if text in user)
        turn = 2 if "Conversation with User" in user else 1
        if "Start of Assistant B" in user:
            # (when the baseline is a real run, not BASELINE_TEXT: A wins, whatever the order)
            baseline_is_a = BASELINE_TEXT not in user or user.index(BASELINE_TEXT) < user.index("Start of Assistant B")
            # 81: always A (position bias); 91: the model wins; 111: the baseline wins
            pick = {81: "A", 91: "B" if baseline_is_a else "A", 111: "A" if baseline_is_a else "B"}[question_id]
            content = f"Not [[C]]; my final verdict: [[{pick}]]"
        elif question_id in self.unparsable:
            # a citation, an out-of-range rating, no [[N]]: none of it is a score
            content = "The answer cites [1] and [2] but I cannot rate it. Score: [[11]]"
        else:
            content = f"Compared with [3], the answer is fine. Rating: [[{expected_score(question_id, turn)}]]"
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bench_dir(shared_data, tmp_path_factory) -> Path:
    """FastChat's MT-Bench files, with only QUESTION_IDS in question.jsonl."""
    src = shared_data / "mt_bench"
    dst = tmp_path_factory.mktemp("mt_bench_subset")
    shutil.copytree(src / "reference_answer", dst / "reference_answer")
    shutil.copy(src / "judge_prompts.jsonl", dst)
    lines = [line for line in (src / "question.jsonl").read_text().splitlines() if json.loads(line)["question_id"] in QUESTION_IDS]
    (dst / "question.jsonl").write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture(scope="module")
def answered(tiny_root, bench_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny model's answers, generated once (no judge): (out_dir, summary)."""
    out = tmp_path_factory.mktemp("answered")
    summary = run_mt_bench(
        model_id="tiny", model_path=tiny_root / "model", out_dir=out, mt_bench_dir=bench_dir,
        judge=None, max_new_tokens=8, device="cpu", batch_size=2,
    )
    return out, summary


@pytest.fixture
def out_dir(answered, tmp_path) -> Path:
    """A fresh output folder already holding the answers, so tests only judge."""
    shutil.copytree(answered[0] / "model_answer", tmp_path / "out" / "model_answer")  # with its .settings.json
    return tmp_path / "out"


@pytest.fixture
def server(bench_dir):
    questions = {q.question_id: q.turns[0] for q in mt_data.load(bench_dir).questions}
    srv = JudgeServer(questions)
    yield srv
    srv.close()


@pytest.fixture
def planted_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    return PLANTED_KEY


def judge_for(server, **kw) -> JudgeSettings:
    return JudgeSettings(model="test-judge", base_url=server.base_url, **{"backoff_s": 0.01, **kw})


def run(out_dir, tiny_root, bench_dir, judge, **kw) -> dict:
    return run_mt_bench(
        model_id="tiny", model_path=tiny_root / "model", out_dir=out_dir, mt_bench_dir=bench_dir,
        judge=judge, max_new_tokens=8, device="cpu", **kw,
    )


def assert_key_absent(*places):
    for place in places:
        if isinstance(place, Path):
            for path in [place] if place.is_file() else place.rglob("*"):
                if path.is_file():
                    assert PLANTED_KEY not in path.read_text(errors="replace"), f"API key written to {path}"
        else:
            assert PLANTED_KEY not in place


# ---------------------------------------------------------------- unit


@pytest.mark.parametrize(
    "verdict, score",
    [
        ("Good. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("Rating: [[5]]. A perfect answer would earn [[9]]", 5.0),  # the first rating, as FastChat takes it
        ("As shown in [1], the answer is wrong.", -1),  # a citation is not a score
        ("See [2]. Rating: [6]", 6.0),  # one bracket dropped after "Rating:"
        ("Rating: [[0]]", -1),
        ("Rating: [[11]]", -1),
        ("no rating at all", -1),
    ],
)
def test_parse_score(verdict, score):
    assert parse_score(verdict) == score


def test_jsonl_tolerates_torn_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlAppender(path) as out:
        out.write({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]
    path.write_text('{"a": 1}\n{"a": \n{"a": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_jsonl(path)


def test_judge_prompts_follow_fastchat(shared_data):
    bench = mt_data.load(shared_data / "mt_bench")
    assert len(bench.questions) == 80 and len(bench.references) == 30
    by_id = {q.question_id: q for q in bench.questions}
    name, system, user = single_prompt(bench, by_id[81], ["A1", "A2"], 1)
    assert name == "single-v1" and "A1" in user and "A2" not in user
    name, _, user = single_prompt(bench, by_id[111], ["A1", "A2"], 2)
    assert name == "single-math-v1-multi-turn"
    assert bench.references[111][0] in user and bench.references[111][1] in user and "A2" in user
    # --limit keeps categories apart: a seeded subset, never the first (writing) questions only
    picked = mt_data.select(bench.questions, 8)
    assert sorted(q.category for q in picked) == sorted({q.category for q in bench.questions})
    assert picked == mt_data.select(bench.questions, 8) and len(mt_data.select(bench.questions, 3)) == 3
    assert (by_id[81].temperature, by_id[111].temperature, by_id[141].temperature) == (0.7, 0.0, 0.1)


def test_unknown_template_is_an_error(answered, tiny_root, bench_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown FastChat conversation template 'vicuna_1\.1'.*Did you mean.*vicuna_v1\.1"):
        run_mt_bench(model_id="x", model_path=tiny_root / "model", out_dir=tmp_path, mt_bench_dir=bench_dir, template="vicuna_1.1")


def test_missing_mt_bench_file_is_named(tmp_path, tiny_root):
    (tmp_path / "question.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="judge_prompts.jsonl"):
        run_mt_bench(model_id="x", model_path=tiny_root / "model", out_dir=tmp_path / "o", mt_bench_dir=tmp_path)


# ---------------------------------------------------------------- answers


def test_answers_without_judge(answered):
    out, summary = answered
    assert summary["judged"] is False
    assert summary["turn1"] is summary["turn2"] is summary["overall"] is None
    assert summary["per_category"] == {} and summary["judgment_file"] is None
    # no template given, no chat template, unknown name: not one_shot, and the summary says which
    assert summary["template"] == "zero_shot" and "fallback" in summary["template_reason"]
    records = read_jsonl(out / "model_answer" / "tiny.jsonl")
    assert sorted(r["question_id"] for r in records) == list(QUESTION_IDS)
    for r in records:
        assert set(r) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert r["model_id"] == "tiny" and len(r["choices"][0]["turns"]) == 2
        assert "Human: Got any creative ideas" not in "".join(r["choices"][0]["turns"])  # one_shot's example
    assert not (out / "model_judgment").exists()


def test_answers_resume_and_adapter(answered, tiny_root, bench_dir, tmp_path):
    """A rerun skips stored answers; a PEFT adapter is applied on its base in memory."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_root / "model")
    # init_lora_weights=False: a non-zero update, so answers through the adapter differ from the base's
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)
    out = tmp_path / "out"
    answer_file = out / "model_answer" / "lora.jsonl"
    answer_file.parent.mkdir(parents=True)
    kept = {"question_id": 81, "answer_id": "kept", "model_id": "lora", "choices": [{"index": 0, "turns": ["a", "b"]}], "tstamp": 0}
    answer_file.write_text(json.dumps(kept) + "\n" + '{"question_id": 91, "answ')  # torn by a kill
    from eval_harness.discovery import weights_fingerprint

    settings = {"model_path": str(tiny_root / "model"), "adapter_path": str(adapter), "template": "zero_shot",
                "weights": weights_fingerprint(str(adapter)), "max_new_tokens": 8, "dtype": "float32", "seed": 0}
    (out / "model_answer" / "lora.settings.json").write_text(json.dumps(settings))  # as the killed run left it
    summary = run_mt_bench(
        model_id="lora", model_path=tiny_root / "model", adapter_path=adapter, out_dir=out,
        mt_bench_dir=bench_dir, max_new_tokens=8, template="zero_shot", batch_size=1,
    )
    records = {r["question_id"]: r for r in read_jsonl(answer_file)}
    assert sorted(records) == [81, 91, 111] and len(read_jsonl(answer_file)) == 3
    assert records[81]["answer_id"] == "kept"
    assert (summary["template"], summary["template_reason"]) == ("zero_shot", "requested")
    base_answers = {r["question_id"]: r for r in read_jsonl(answered[0] / "model_answer" / "tiny.jsonl")}
    # question 111 is math: greedy, so only the adapter can make the answers differ
    assert records[111]["choices"] != base_answers[111]["choices"]
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["lora.jsonl", "lora.settings.json", "summary_lora.json"]
    with pytest.raises(ValueError, match=r"lora.jsonl: its answers were generated with other settings \(max_new_tokens: stored 8, now 16\)"):
        run_mt_bench(
            model_id="lora", model_path=tiny_root / "model", adapter_path=adapter, out_dir=out,
            mt_bench_dir=bench_dir, max_new_tokens=16, template="zero_shot",
        )
    weights = adapter / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained in place
    with pytest.raises(ValueError, match=r"other settings \(weights: stored"):
        run_mt_bench(
            model_id="lora", model_path=tiny_root / "model", adapter_path=adapter, out_dir=out,
            mt_bench_dir=bench_dir, max_new_tokens=8, template="zero_shot",
        )


# ---------------------------------------------------------------- judging


def test_end_to_end_judge(out_dir, server, tiny_root, bench_dir, planted_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server, concurrency=3))
    judgments = read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl")
    assert len(judgments) == 6 == len(server.requests)
    for j in judgments:
        assert j["score"] == expected_score(j["question_id"], j["turn"])
        assert j["model"] == "tiny" and j["judge"][0] == "test-judge"
        assert j["judgment"].endswith(f"[[{expected_score(j['question_id'], j['turn'])}]]")
        ref = j["question_id"] == 111
        assert j["judge"][1] == ("single-math-v1" if ref else "single-v1") + ("-multi-turn" if j["turn"] == 2 else "")
    for r in server.requests:
        assert (r["model"], r["temperature"], r["max_tokens"]) == ("test-judge", 0.0, 2048)
        assert r["messages"][0]["role"] == "system" and r["auth"] == f"Bearer {PLANTED_KEY}"
    turn1 = sum(expected_score(q, 1) for q in QUESTION_IDS) / 3
    turn2 = sum(expected_score(q, 2) for q in QUESTION_IDS) / 3
    assert summary["judged"] is True and summary["parse_failures"] == 0
    assert summary["turn1"] == pytest.approx(turn1) and summary["turn2"] == pytest.approx(turn2)
    assert summary["overall"] == pytest.approx((turn1 + turn2) / 2)
    assert summary["per_category"] == {
        CATEGORIES[q]: pytest.approx((expected_score(q, 1) + expected_score(q, 2)) / 2) for q in QUESTION_IDS
    }
    assert summary["per_question"]["111"]["turn2"] == expected_score(111, 2)
    json.dumps(summary)  # serialisable
    # a rerun judges nothing twice
    again = run(out_dir, tiny_root, bench_dir, judge_for(server))
    assert len(server.requests) == 6 and again["overall"] == summary["overall"]
    out, err = capfd.readouterr()
    assert_key_absent(out_dir, caplog.text, out, err)


def test_fastchat_show_result_reads_our_judgments(out_dir, server, tiny_root, bench_dir, capsys):
    """FastChat's own show_result.py computes the same MT-Bench score from our file."""
    import argparse

    from fastchat.llm_judge.show_result import display_result_single

    summary = run(out_dir, tiny_root, bench_dir, judge_for(server))
    capsys.readouterr()
    display_result_single(argparse.Namespace(
        input_file=str(out_dir / "model_judgment" / "test-judge_single.jsonl"),
        bench_name="mt_bench", judge_model="test-judge", model_list=None,
    ))
    average = capsys.readouterr().out.split("Average")[1]
    assert float(re.search(r"^tiny\s+([\d.]+)$", average, re.M).group(1)) == pytest.approx(summary["overall"], abs=1e-5)


def test_retries_on_server_errors(out_dir, server, tiny_root, bench_dir):
    server.fail_first = 3
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server, concurrency=1))
    judgments = read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl")
    assert len(server.requests) == 9 and len(judgments) == 6
    assert all(j["score"] == expected_score(j["question_id"], j["turn"]) for j in judgments)
    assert summary["parse_failures"] == 0


def test_retries_on_timeouts(out_dir, server, tiny_root, bench_dir):
    server.slow_first = 2
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server, concurrency=1, timeout_s=0.3))
    assert len(server.requests) == 8 and summary["parse_failures"] == 0
    assert len(read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl")) == 6


def test_retries_exhausted_stores_nothing(out_dir, server, tiny_root, bench_dir):
    server.fail_first = 100
    with pytest.raises(JudgeError, match="HTTP 500.*gave up after 3 attempts"):
        run(out_dir, tiny_root, bench_dir, judge_for(server, concurrency=1, max_retries=2))
    assert read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl") == []


@pytest.mark.parametrize("status", [401, 404])
def test_auth_and_not_found_fail_fast_without_showing_key(status, out_dir, server, tiny_root, bench_dir, planted_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    server.status = status
    with pytest.raises(JudgeError) as info:
        run(out_dir, tiny_root, bench_dir, judge_for(server, concurrency=1))
    message = str(info.value)
    assert f"HTTP {status}" in message and "test-judge" in message and server.base_url in message
    assert ("OPENAI_API_KEY" in message) if status == 401 else ("base_url" in message)
    assert len(server.requests) == 1  # no retries, nothing else sent
    assert read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl") == []
    out, err = capfd.readouterr()
    assert_key_absent(message, repr(info.value), caplog.text, out, err, out_dir)


def test_unparsable_verdicts_are_failures(out_dir, server, tiny_root, bench_dir):
    server.unparsable = {81}
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server))
    judgments = read_jsonl(out_dir / "model_judgment" / "test-judge_single.jsonl")
    assert sorted(j["score"] for j in judgments if j["question_id"] == 81) == [-1, -1]
    assert summary["parse_failures"] == 2
    assert summary["per_category"]["writing"] is None
    assert summary["turn1"] == pytest.approx((expected_score(91, 1) + expected_score(111, 1)) / 2)


def test_repeats_report_spread(out_dir, server, tiny_root, bench_dir):
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server, repeats=2))
    assert len(server.requests) == 12
    spread = summary["judge_spread"]
    assert spread["repeats"] == 2 and spread["mean_item_stdev"] == 0.0
    assert spread["overall_per_repeat"] == [pytest.approx(summary["overall"])] * 2


KILL_SCRIPT = """
import sys
from pathlib import Path
from eval_harness.mt_bench import JudgeSettings, run_mt_bench
run_mt_bench(model_id="tiny", model_path=sys.argv[1], out_dir=Path(sys.argv[2]), mt_bench_dir=Path(sys.argv[3]),
             judge=JudgeSettings(model="test-judge", base_url=sys.argv[4], concurrency=1), max_new_tokens=8, device="cpu")
"""


@pytest.mark.slow
def test_resume_after_sigkill(out_dir, server, tiny_root, bench_dir, planted_key):
    server.delay_s = 0.3
    judgment_file = out_dir / "model_judgment" / "test-judge_single.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_root / "model"), str(out_dir), str(bench_dir), server.base_url],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while len(read_jsonl(judgment_file)) < 2:
        assert proc.poll() is None, f"judging ended early: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no judgments within 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = len(read_jsonl(judgment_file))
    assert 2 <= stored < 6
    with judgment_file.open("a") as fh:  # what a kill in the middle of a write leaves
        fh.write('{"question_id": 91, "model": "tiny", "judge": ["test-ju')
    server.delay_s = 0.0
    before = len(server.requests)
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server))
    judgments = read_jsonl(judgment_file)
    keys = [(j["question_id"], j["turn"]) for j in judgments]
    assert len(keys) == len(set(keys)) == 6, keys
    assert len(server.requests) - before == 6 - stored  # nothing judged twice
    assert summary["overall"] == pytest.approx(
        sum(expected_score(q, t) for q in QUESTION_IDS for t in (1, 2)) / 6
    )
    assert PLANTED_KEY not in judgment_file.read_text()


def test_pairwise_against_baseline(out_dir, server, tiny_root, bench_dir, capsys):
    baseline = out_dir / "model_answer" / "base-model.jsonl"
    baseline.write_text("".join(
        json.dumps({"question_id": q, "answer_id": str(q), "model_id": "base-model",
                    "choices": [{"index": 0, "turns": [f"{BASELINE_TEXT} {q} one", f"{BASELINE_TEXT} {q} two"]}], "tstamp": 0}) + "\n"
        for q in QUESTION_IDS
    ))
    summary = run(out_dir, tiny_root, bench_dir, judge_for(server), pairwise_baseline=baseline)
    pairs = read_jsonl(out_dir / "model_judgment" / "test-judge_pair.jsonl")
    assert len(pairs) == 6 and len(server.requests) == 6 + 12  # single grading + two orders per pair
    by_q = {(p["question_id"], p["turn"]): p for p in pairs}
    assert (by_q[81, 1]["g1_winner"], by_q[81, 1]["g2_winner"]) == ("model_1", "model_2")  # inconsistent
    assert by_q[91, 2]["g1_winner"] == by_q[91, 2]["g2_winner"] == "model_1"
    assert by_q[111, 1]["judge"] == ["test-judge", "pair-math-v1"] and by_q[111, 2]["g1_winner"] == "model_2"
    result = summary["pairwise"]
    assert (result["win"], result["loss"], result["tie"], result["inconsistent"]) == (2, 2, 2, 2)
    assert result["win_rate"] == pytest.approx(1 / 3) and result["win_rate_adjusted"] == pytest.approx(0.5)
    run(out_dir, tiny_root, bench_dir, judge_for(server), pairwise_baseline=baseline)
    assert len(server.requests) == 18  # resumed: nothing judged twice
    import argparse

    from fastchat.llm_judge.show_result import display_result_pairwise

    capsys.readouterr()
    display_result_pairwise(argparse.Namespace(
        input_file=str(out_dir / "model_judgment" / "test-judge_pair.jsonl"), bench_name="mt_bench",
        judge_model="test-judge", model_list=None, baseline_model="base-model",
    ))
    shown = capsys.readouterr().out
    assert re.search(r"^tiny\s+2\s+2\s+2\s+0\.333", shown, re.M), shown  # FastChat agrees: win, loss, tie


def test_parse_verdict_takes_the_last():
    from eval_harness.mt_bench.pairwise import parse_verdict

    assert parse_verdict('Output "[[A]]" if A is better, "[[B]]" if B is. Verdict: [[B]]') == "B"
    assert parse_verdict("[[C]]") == "tie" and parse_verdict("A is better [A]") == "error"


def test_download_into_cache_checks_hashes(shared_data, tmp_path, monkeypatch):
    """Without mt_bench_dir the files come from FastChat's URL into the cache, verified by sha256."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    site = tmp_path / "site"
    (site / "mt_bench").mkdir(parents=True)
    shutil.copytree(shared_data / "mt_bench" / "reference_answer", site / "mt_bench" / "reference_answer")
    shutil.copy(shared_data / "mt_bench" / "question.jsonl", site / "mt_bench")
    shutil.copy(shared_data / "mt_bench" / "judge_prompts.jsonl", site)  # FastChat keeps it one level up
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(mt_data, "FASTCHAT_RAW", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setenv("EVAL_HARNESS_CACHE", str(tmp_path / "cache"))
        bench = mt_data.load(None)
        assert len(bench.questions) == 80 and bench.source == mt_data.cache_dir()
        assert str(tmp_path / "cache") in str(bench.source)
        (site / "judge_prompts.jsonl").write_text("tampered\n")
        (bench.source / "judge_prompts.jsonl").unlink()
        with pytest.raises(RuntimeError, match="judge_prompts.jsonl: sha256 starts .*expected fd283293406d024f"):
            mt_data.load(None)
        assert not (bench.source / "judge_prompts.jsonl").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_template_choice(tiny_root, caplog):
    from eval_harness.mt_bench.answer import load_tokenizer, resolve_template

    tokenizer = load_tokenizer(str(tiny_root / "model"), None)
    with caplog.at_level(logging.WARNING):
        chat = resolve_template(None, tokenizer, "/runs/my-finetune")
    assert chat.name == "zero_shot" and "zero_shot" in caplog.text  # never one_shot's canned example
    assert resolve_template(None, tokenizer, "/hub/vicuna-7b-v1.5").name == "vicuna_v1.1"
    prompt = resolve_template("vicuna_v1.1", tokenizer, "x").prompt(tokenizer, ["Q1", "Q2"], ["A1"])
    assert prompt.endswith("USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    chat = resolve_template(None, tokenizer, "/runs/my-finetune")
    assert chat.name == "hf-chat-template"
    assert chat.prompt(tokenizer, ["Q1", "Q2"], ["A1"]) == "<|user|>Q1<|assistant|>A1<|user|>Q2<|assistant|>"


def test_batch_size_accepts_lm_eval_spelling():
    from eval_harness.mt_bench.answer import AUTO_BATCH_SIZE, parse_batch_size

    assert [parse_batch_size(v) for v in (4, "2", "auto", "auto:4", None)] == [4, 2] + [AUTO_BATCH_SIZE] * 3
    with pytest.raises(ValueError, match="batch_size: got 'many'; expected a positive integer or 'auto'"):
        parse_batch_size("many")


def test_compare_cli_judges_every_run_through_the_loopback_judge(axolotl_runs, bench_dir, server, tmp_path):
    """`python -m eval_harness compare` end to end: real Axolotl runs, answers, judge over a socket."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("lisa", "lora"):
        (runs / name).symlink_to(axolotl_runs / name, target_is_directory=True)
    env = {**os.environ, "OPENAI_API_KEY": PLANTED_KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "eval_harness", "compare", str(runs), "--tasks", "mt_bench",
         "--mt-bench-dir", str(bench_dir), "--max-new-tokens", "8", "--judge-model", "test-judge",
         "--judge-base-url", server.base_url, "--pairwise-baseline", "lora", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((runs / "report" / "results.json").read_text())
    rows = {r["name"]: r for r in results["runs"]}
    assert {"Vanilla", "lisa", "lora"} <= set(rows)
    turn1 = sum(expected_score(q, 1) for q in QUESTION_IDS) / len(QUESTION_IDS)
    turn2 = sum(expected_score(q, 2) for q in QUESTION_IDS) / len(QUESTION_IDS)
    judgments = read_jsonl(runs / "report" / "mt_bench" / "model_judgment" / "test-judge_single.jsonl")
    assert sorted({j["model"] for j in judgments}) == ["Vanilla", "lisa", "lora"]
    assert len(judgments) == 3 * len(QUESTION_IDS) * 2
    for name in ("Vanilla", "lisa", "lora"):
        mt = rows[name]["results"]["mt_bench"]
        assert mt["metrics"]["turn1"]["value"] == pytest.approx(turn1)
        assert mt["metrics"]["turn2"]["value"] == pytest.approx(turn2)
        assert mt["metrics"]["overall"]["value"] == pytest.approx((turn1 + turn2) / 2)
    pairs = read_jsonl(runs / "report" / "mt_bench" / "model_judgment" / "test-judge_pair.jsonl")
    assert {p["model_1"] for p in pairs} == {"Vanilla", "lisa"}  # the baseline is not judged against itself
    assert_key_absent(runs / "report", proc.stdout, proc.stderr)


def test_a_batch_of_mixed_temperatures_decodes_each_row_at_its_own(tiny_root):
    """Questions of every temperature share a batch: a greedy row comes out exactly as in an all-greedy batch
    of the same prompts, and a sampled row is sampled (at temperature 5 it differs from the greedy one)."""
    from eval_harness.mt_bench.answer import (_generate, load_model, load_tokenizer, mixes_temperatures,
                                              resolve_template)

    model_path = str(tiny_root / "model")
    tokenizer = load_tokenizer(model_path, None)
    chat = resolve_template("zero_shot", tokenizer, model_path)
    model = load_model(model_path, None, "cpu", "float32")
    assert mixes_temperatures(model)
    prompts = [chat.prompt(tokenizer, [text], []) for text in ("Name a colour.", "Count to five, please, slowly.",
                                                                 "Say hi.", "Write one word.")]
    greedy = _generate(model, tokenizer, chat, prompts, [0.0] * 4, 24, "cpu", 0)
    mixed = _generate(model, tokenizer, chat, prompts, [0.0, 5.0, 0.0, 5.0], 24, "cpu", 0)
    assert [mixed[0], mixed[2]] == [greedy[0], greedy[2]] and any(greedy)
    assert [mixed[1], mixed[3]] != [greedy[1], greedy[3]]
    assert _generate(model, tokenizer, chat, prompts, [0.0, 5.0, 0.0, 5.0], 24, "cpu", 0) == mixed  # seeded
    model.generation_config.typical_p = 0.9  # a filter that cannot take a greedy row: batches split by temperature
    assert not mixes_temperatures(model)


def test_row_temperature_scales_each_row_and_keeps_only_the_best_of_a_greedy_one():
    import torch

    from eval_harness.mt_bench.answer import RowTemperature

    scores = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [4.0, 0.0, -2.0]])
    out = RowTemperature([0.0, 0.5, 2.0], "cpu")(None, scores)
    assert out[0].tolist() == [float("-inf"), 0.0, float("-inf")]
    assert out[1].tolist() == [2.0, 6.0, 4.0] and out[2].tolist() == [2.0, 0.0, -1.0]


def test_batches_follow_question_order_unless_split_by_temperature():
    from eval_harness.mt_bench.answer import _batches

    questions = [mt_data.Question(i, c, ("a", "b")) for i, c in
                 ((81, "writing"), (111, "math"), (131, "extraction"), (141, "stem"), (91, "roleplay"))]
    temperatures = {q.question_id: q.temperature for q in questions}
    assert sorted(set(temperatures.values())) == [0.0, 0.1, 0.7]
    mixed = _batches(questions, 2)
    assert [[q.question_id for q in b] for b in mixed] == [[81, 91], [111, 131], [141]]
    split = _batches(questions, 2, by_temperature=True)
    assert [{temperatures[q.question_id] for q in b} for b in split] == [{0.0}, {0.1}, {0.7}]
    assert sorted(q.question_id for b in split for q in b) == [81, 91, 111, 131, 141]
