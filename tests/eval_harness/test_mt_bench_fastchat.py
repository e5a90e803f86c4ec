"""MT-Bench judged through FastChat's own serving stack (controller, model worker, OpenAI API server).

The judge is the tiny random model, so its verdicts carry no rating: they must be stored
as parse failures (score -1), never as scores.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from eval_harness.mt_bench import JudgeSettings, parse_score, run_mt_bench
from eval_harness.mt_bench.data import load, select
from eval_harness.mt_bench.fastchat_worker import get_context_length
from lisa_formats.jsonl import read_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launcher_fixes_fastchat_context_length(tiny_root):
    """What crashes fschat's worker under transformers 5: a RoPE config always has rope_scaling, without factor."""
    from fastchat.utils import get_context_length as fastchat_get_context_length
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_root / "model")
    assert config.rope_scaling and "factor" not in config.rope_scaling
    with pytest.raises(KeyError, match="factor"):
        fastchat_get_context_length(config)
    assert get_context_length(config) == config.max_position_embeddings


@pytest.fixture
def fastchat_judge(tiny_root, tmp_path):
    """FastChat's serving stack on loopback serving the tiny model as "tiny-judge"; yields its /v1 URL."""
    model = tmp_path / "tiny-judge"
    shutil.copytree(tiny_root / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # room for a judge prompt; RoPE has no learned positions
    (model / "config.json").write_text(json.dumps(config))
    controller, worker, api = (free_port() for _ in range(3))
    host = ["--host", "127.0.0.1"]
    commands = {
        "controller": ["-m", "fastchat.serve.controller", *host, "--port", str(controller)],
        "worker": [
            "-m", "eval_harness.mt_bench.fastchat_worker", *host, "--port", str(worker),
            "--worker-address", f"http://127.0.0.1:{worker}", "--controller-address", f"http://127.0.0.1:{controller}",
            "--model-path", str(model), "--model-names", "tiny-judge", "--device", "cpu", "--conv-template", "vicuna_v1.1",
        ],
        "api": ["-m", "fastchat.serve.openai_api_server", *host, "--port", str(api),
                "--controller-address", f"http://127.0.0.1:{controller}"],
    }
    procs = {}
    try:
        for name, args in commands.items():
            log = (tmp_path / f"{name}.log").open("w")
            procs[name] = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        base_url = f"http://127.0.0.1:{api}/v1"
        deadline = time.time() + 180
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"FastChat {name} exited {proc.returncode}:\n{(tmp_path / f'{name}.log').read_text()[-3000:]}")
            try:
                models = httpx.get(f"{base_url}/models", timeout=5).json()
                if any(m["id"] == "tiny-judge" for m in models.get("data", [])):
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "FastChat stack did not serve tiny-judge within 180 s"
            time.sleep(1)
        yield base_url
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.fastchat
def test_judge_through_fastchat_serving_stack(fastchat_judge, tiny_root, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-checked-by-fastchat")
    # one question: its two turns are two judge requests, enough to show the stack serves verdicts
    judge = JudgeSettings(model="tiny-judge", base_url=fastchat_judge, max_tokens=16, concurrency=1)
    summary = run_mt_bench(
        model_id="tiny", model_path=tiny_root / "model", out_dir=tmp_path / "out",
        mt_bench_dir=shared_data / "mt_bench", judge=judge, limit=1, max_new_tokens=4, device="cpu",
    )
    judgments = read_jsonl(tmp_path / "out" / "model_judgment" / "tiny-judge_single.jsonl")
    (picked,) = select(load(shared_data / "mt_bench").questions, 1)  # --limit 1: one seeded question
    assert sorted((j["question_id"], j["turn"]) for j in judgments) == [(picked.question_id, 1), (picked.question_id, 2)]
    for j in judgments:
        assert isinstance(j["judgment"], str) and j["judgment"]  # what the tiny model said, not an error
        assert j["score"] == parse_score(j["judgment"]) == -1
    assert summary["judged"] is True and summary["parse_failures"] == 2
    assert summary["turn1"] is summary["turn2"] is summary["overall"] is None
