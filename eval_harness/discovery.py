"""Read a folder of Axolotl output dirs into :class:`Run` records.

A run is an Axolotl ``output_dir``: either full weights (``config.json`` + safetensors)
or a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) whose base
model is named in ``adapter_config.json``. The method (LISA / LoRA / Full) and its
settings come from the Axolotl config that Axolotl saves twice: as a YAML block in the
model card ``README.md`` and as JSON in ``debug.log``. Training facts (loss curve,
runtime, memory, trainable parameters) come from whichever of ``trainer_state.json``,
``debug.log``, ``lisa_history.json`` and ``run_resources.json`` exist. Peak memory says what
it measured (:data:`MEMORY_KINDS`): the trainer's GPU figure when it logged one, else the
peak ``lisa-plugin train`` measured around the training process (on CPU the trainer logs zeros).

Nothing here loads a model: weights are checked by reading safetensors headers, so
a broken run is reported before any evaluation starts.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lisa_formats.history import HISTORY_FILE, LisaHistory, read_history
from lisa_formats.resources import RESOURCES_FILE, read_resources
from lisa_formats.userfiles import MIB, UserFileError, is_regular_file, read_user_text

VANILLA = "Vanilla"
REFERENCE_METHOD = "reference"  # a row of answers read from a file (compare --reference), not a run
# Run folder names compare cannot use: the base model's row (any case: results/<name>/ on a case-insensitive disk)
RESERVED_NAMES = (VANILLA.lower(),)
# Bounds on what is read from a run folder (user input: a FIFO or /dev/zero must not hang or exhaust memory)
CARD_LIMIT = 8 * MIB  # README.md (the model card)
JSON_LIMIT = 64 * MIB  # adapter_config.json, trainer_state.json, safetensors index
LOG_LIMIT = 256 * MIB  # debug.log: a longer log is read up to here
METHODS = ("Vanilla", "LISA", "LoRA", "QLoRA", "Full")

# The settings that tell two runs of one method apart, shown next to the method.
KEY_SETTINGS = {"LISA": ("gamma", "K"), "LoRA": ("r", "alpha"), "QLoRA": ("r", "alpha")}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")

# Settings worth a column in the report, in the order they are shown.
COMMON_SETTINGS = (
    "learning_rate",
    "max_steps",
    "num_epochs",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "sequence_len",
    "optimizer",
    "lr_scheduler",
    "seed",
)


# What a run's peak memory figure is; the report names it beside the number and never mixes kinds silently.
MEMORY_KINDS = {
    "gpu_trainer": "peak GPU memory allocated, logged by the trainer",
    "gpu_process": "peak GPU memory of the training process (measured by lisa-plugin train)",
    "rss_process": "peak RSS of the training process (measured by lisa-plugin train)",
}


@dataclass
class TrainingFacts:
    """What the training logs say; every field is None when no file records it."""

    loss_curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"[, "epoch"]}
    train_loss: float | None = None
    runtime_s: float | None = None
    samples_per_second: float | None = None  # the trainer's train_samples_per_second
    peak_memory_gib: float | None = None
    peak_memory_kind: str | None = None  # a key of MEMORY_KINDS; None when no memory is known
    trainable_params: int | None = None
    total_params: int | None = None
    sources: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One model to evaluate: a fine-tuned run, or the base model itself (``Vanilla``)."""

    name: str
    method: str
    model_path: str  # what ``from_pretrained`` loads: the run dir, or the base model of an adapter
    adapter_path: str | None
    base_model: str | None
    path: str | None = None  # the run dir; None for the Vanilla row
    settings: dict[str, Any] = field(default_factory=dict)
    training: TrainingFacts = field(default_factory=TrainingFacts)
    config_source: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discovery:
    runs: list[Run]  # Vanilla first when a base model is known, then the runs in name order
    problems: list[str]  # folders that are not runs, and the like
    base_model: str | None

    @property
    def ok(self) -> bool:
        return not self.problems and all(run.ok for run in self.runs)


def short_settings(method: str, settings: dict[str, Any]) -> str:
    """``"gamma=2 K=5"`` for a LISA run, ``"r=8 alpha=16"`` for LoRA, "" otherwise."""
    return " ".join(f"{k}={settings[k]}" for k in KEY_SETTINGS.get(method, ()) if settings.get(k) is not None)


class RunError(Exception):
    """A run folder cannot be evaluated; the message names the file and what is wrong."""


# --------------------------------------------------------------------------- weights


def check_safetensors(path: Path) -> int:
    """Validate a safetensors file from its header; return its number of parameters.

    Reads only the header: a truncated, empty or non-safetensors file is caught without
    loading any tensor.
    """
    size = path.stat().st_size
    if size < 8:
        raise RunError(f"{path}: {size} bytes, too short to be a safetensors file")
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > size - 8 or header_len > 100 * 2**20:
            raise RunError(
                f"{path}: header length {header_len} does not fit a file of {size} bytes (truncated or corrupt)"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: safetensors header is not JSON ({exc}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise RunError(f"{path}: safetensors header is a {type(header).__name__}, expected an object")
    end, n_params = 0, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            n_params += count
        except (KeyError, TypeError, IndexError, ValueError):
            raise RunError(f"{path}: tensor {name!r} has no valid shape/data_offsets in the header") from None
    if 8 + header_len + end != size:
        raise RunError(
            f"{path}: header says {8 + header_len + end} bytes, file has {size} (truncated or corrupt)"
        )
    return n_params


def check_weights(run_dir: Path, stem: str) -> int:
    """Validate ``{stem}.safetensors`` (or its sharded index, or a ``.bin``); return the parameter count
    (0 when only pickled ``.bin`` weights exist and cannot be counted without loading them)."""
    single = run_dir / f"{stem}.safetensors"
    index = run_dir / f"{stem}.safetensors.index.json"
    if single.exists():
        return check_safetensors(single)
    if index.exists():
        try:
            shards = sorted(set(json.loads(read_user_text(index, JSON_LIMIT))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError, TypeError, OSError) as exc:
            raise RunError(f"{index}: not a safetensors index with a 'weight_map' ({exc})") from None
        total = 0
        for shard in shards:
            if not (run_dir / shard).exists():
                raise RunError(f"{index}: lists shard {shard!r}, which is missing")
            total += check_safetensors(run_dir / shard)
        return total
    pickled = [p for p in (run_dir / f"{stem}.bin", run_dir / "pytorch_model.bin") if p.exists()]
    if pickled:
        if pickled[0].stat().st_size == 0:
            raise RunError(f"{pickled[0]}: empty file")
        return 0
    raise RunError(f"{run_dir}: no weights found (expected {single.name}, {index.name} or a .bin file)")


def weights_fingerprint(path: str | Path | None) -> str | None:
    """A short hash of the weight files' names, sizes and mtimes (ns), or None for a hub id.

    Part of every cache key: a run retrained in the same dir must not reuse old answers or scores.
    """
    import hashlib

    folder = Path(path) if path else None
    if folder is None or not folder.is_dir():
        return None
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- config


def _read(path: Path, limit: int, truncate: bool = False) -> str:
    """A run folder's text file, bounded; a FIFO, device or oversized file is a :class:`RunError` naming it."""
    try:
        return read_user_text(path, limit, truncate)
    except (UserFileError, OSError) as exc:
        raise RunError(str(exc) if isinstance(exc, UserFileError) else f"{path}: cannot read it ({exc})") from None


def _config_from_readme(readme: Path) -> dict[str, Any] | None:
    text = _read(readme, CARD_LIMIT)
    match = re.search(r"axolotl config.*?```yaml\n(.*?)```", text, re.S)
    if not match:
        return None
    try:
        cfg = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise RunError(f"{readme}: the axolotl config YAML block does not parse ({exc})") from None
    return cfg if isinstance(cfg, dict) else None


def _config_from_debug_log(log: Path) -> dict[str, Any] | None:
    lines = _read(log, LOG_LIMIT, truncate=True).splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("config:") and i + 1 < len(lines) and lines[i + 1] == "{":
            block = []
            for body in lines[i + 1 :]:
                block.append(body)
                if body == "}":
                    break
            try:
                return json.loads("\n".join(block))
            except json.JSONDecodeError:
                return None
    return None


def read_axolotl_config(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The saved Axolotl config and the file it came from (model card first, then debug.log)."""
    for name, reader in (("README.md", _config_from_readme), ("debug.log", _config_from_debug_log)):
        path = run_dir / name
        if path.exists():
            cfg = reader(path)
            if cfg:
                return cfg, name
    return None, None


def method_and_settings(cfg: dict[str, Any], adapter_cfg: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Name the method a config trains with, and the settings that characterise it."""
    settings: dict[str, Any] = {}
    plugins = [str(p) for p in cfg.get("plugins") or []]
    adapter = str(cfg.get("adapter") or "").lower()
    if cfg.get("lisa") or any("lisa" in p.lower() for p in plugins):
        method = "LISA"
        lisa = cfg.get("lisa") or {}
        settings["gamma"] = lisa.get("n_layers")
        settings["K"] = lisa.get("interval_steps")
        for key in ("strategy", "optimizer_state", "train_embeddings", "train_head"):
            if key in lisa:
                settings[key] = lisa[key]
    elif adapter in ("lora", "qlora") or adapter_cfg is not None:
        method = "QLoRA" if adapter == "qlora" else "LoRA"
        ac = adapter_cfg or {}
        settings["r"] = ac.get("r", cfg.get("lora_r"))
        settings["alpha"] = ac.get("lora_alpha", cfg.get("lora_alpha"))
        settings["dropout"] = ac.get("lora_dropout", cfg.get("lora_dropout"))
        targets = ac.get("target_modules") or cfg.get("lora_target_modules")
        if targets:
            settings["target_modules"] = sorted(targets) if isinstance(targets, (list, set)) else targets
    else:
        method = "Full"
    for key in COMMON_SETTINGS:
        if cfg.get(key) is not None:
            settings[key] = cfg[key]
    return method, settings


def method_from_evidence(run_dir: Path, cfg: dict[str, Any] | None, adapter_cfg: dict[str, Any] | None,
                         source: str | None, warnings: list[str]) -> tuple[str, dict[str, Any]]:
    """The method the run's own files show: LISA only when lisa_plugin left its ``lisa_history.json``.

    The saved config says what was asked for; a ``lisa:`` block that Axolotl never handed to the
    plugin (``plugins:`` without it) trains every parameter. A disagreement is added to ``warnings``."""
    method, settings = method_and_settings(cfg or {}, adapter_cfg)
    ran_lisa = is_regular_file(run_dir / HISTORY_FILE)
    if method == "LISA" and not ran_lisa:
        rest = {k: v for k, v in (cfg or {}).items() if k not in ("lisa", "plugins")}
        method, settings = method_and_settings(rest, adapter_cfg)
        warnings.append(
            f"{run_dir}: the axolotl config ({source}) asks for LISA, but there is no {HISTORY_FILE}, which "
            f"lisa_plugin writes whenever LISA trains: LISA did not run (was lisa_plugin.LISAPlugin missing from "
            f"`plugins:`?), so the run is labelled {method}, what its files show"
        )
    elif method != "LISA" and ran_lisa:
        warnings.append(f"{run_dir}: {HISTORY_FILE} shows LISA trained this run, but its axolotl config "
                        f"({source or 'none found'}) names {method}; labelled LISA")
        method, settings = "LISA", {k: v for k, v in settings.items() if k in COMMON_SETTINGS}
    return method, settings


# --------------------------------------------------------------------------- training facts


_LOG_DICT = re.compile(r"\{'[^{}]*\}")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fold_log_entries(
    entries: list[dict[str, Any]], facts: TrainingFacts, logging_steps: int, steps_per_epoch: float | None = None
) -> None:
    """Fold HF Trainer log dicts into ``facts``. Steps come from ``step`` (trainer_state.json),
    else from ``epoch * steps_per_epoch`` (debug.log has no step), else from counting."""
    memory: list[float] = []
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            if key.startswith("memory/max") and _number(value):
                memory.append(float(value))
        loss = _number(entry.get("loss"))
        if loss is not None:
            step = entry.get("step")
            epoch = _number(entry.get("epoch"))
            if step is None and steps_per_epoch and epoch is not None:
                step = round(epoch * steps_per_epoch)
            if step is None:
                step = (len(facts.loss_curve) + 1) * logging_steps
            point = {"step": int(step), "loss": loss}
            if _number(entry.get("epoch")) is not None:
                point["epoch"] = float(entry["epoch"])
            facts.loss_curve.append(point)
        if _number(entry.get("train_runtime")) is not None:
            facts.runtime_s = float(entry["train_runtime"])
            facts.samples_per_second = _number(entry.get("train_samples_per_second"))
            facts.train_loss = _number(entry.get("train_loss"))
    if memory:  # CPU runs log zeros: that is "not measured", not "no memory"
        facts.peak_memory_gib = max(memory)
        facts.peak_memory_kind = "gpu_trainer"


def _measured_memory(run_dir: Path, facts: TrainingFacts, warnings: list[str] | None) -> None:
    """Peak memory from ``run_resources.json`` when the trainer logged none (GPU figure first, else RSS)."""
    try:
        resources = read_resources(run_dir)
    except ValueError as exc:
        if warnings is not None:
            warnings.append(f"{exc}; peak memory not taken from it")
        return
    if resources is None:
        return
    facts.sources.append(RESOURCES_FILE)
    if facts.peak_memory_gib:
        return
    for kind, value in (("gpu_process", resources.peak_gpu_bytes), ("rss_process", resources.peak_rss_bytes)):
        if value:
            facts.peak_memory_gib, facts.peak_memory_kind = value / 2**30, kind
            return


def read_training_facts(run_dir: Path, cfg: dict[str, Any] | None, warnings: list[str] | None = None) -> TrainingFacts:
    """The run's training facts from its logs; unreadable optional files add to ``warnings`` when given."""
    facts = TrainingFacts()
    logging_steps = int((cfg or {}).get("logging_steps") or 1)
    state = run_dir / "trainer_state.json"
    log = run_dir / "debug.log"
    if state.exists():
        try:
            _fold_log_entries(json.loads(_read(state, JSON_LIMIT)).get("log_history", []), facts, logging_steps)
            facts.sources.append(state.name)
        except (ValueError, AttributeError, RunError) as exc:
            if warnings is not None and isinstance(exc, RunError):
                warnings.append(f"{exc}; training facts taken from the other logs")
    text = None
    if log.exists() and not facts.loss_curve:
        try:
            text = _read(log, LOG_LIMIT, truncate=True)
        except RunError as exc:
            if warnings is not None:
                warnings.append(f"{exc}; training facts taken from the other logs")
    if text is not None:
        entries = []
        for match in _LOG_DICT.finditer(text):
            try:
                entries.append(ast.literal_eval(match.group(0)))
            except (ValueError, SyntaxError):
                continue
        total = re.search(r"total_num_steps: ([\d_,]+)", text)
        epochs = _number((cfg or {}).get("num_epochs")) or 1.0
        per_epoch = int(re.sub(r"[_,]", "", total.group(1))) / epochs if total else None
        _fold_log_entries([e for e in entries if isinstance(e, dict)], facts, logging_steps, per_epoch)
        peft_line = re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)", text)
        if peft_line:
            facts.trainable_params = int(peft_line.group(1).replace(",", ""))
            facts.total_params = int(peft_line.group(2).replace(",", ""))
        facts.sources.append(log.name)
    try:
        history = read_lisa_history(run_dir)
    except ValueError:
        history = None  # read_run reports it; the facts come from the other files
    if history is not None:
        counts = [s.get("trainable_params") for s in history.switches if s.get("trainable_params")]
        if counts:
            facts.trainable_params = max(counts)
        facts.sources.append("lisa_history.json")
    _measured_memory(run_dir, facts, warnings)
    return facts


def read_lisa_history(run_dir: Path) -> LisaHistory | None:
    """The run's ``lisa_history.json`` (which layers LISA trained, with its settings); None when absent.

    Raises ValueError naming the file when it is not a readable ``lisa_history/1`` record.
    """
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        return read_history(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: {exc}; expected a lisa_history/1 file") from exc


# --------------------------------------------------------------------------- runs


def normalise_model_id(name: str | None, relative_to: Path | None = None) -> str | None:
    """Local paths become absolute and resolved, so two spellings of one dir compare equal."""
    if not name:
        return None
    candidate = Path(name).expanduser()
    if not candidate.is_absolute() and relative_to is not None and (relative_to / candidate).exists():
        candidate = relative_to / candidate
    return str(candidate.resolve()) if candidate.exists() else name


def missing_local_model(name: str | None) -> bool:
    """Whether ``name`` is written as a local path (not a hub id like ``org/model``) that does not exist."""
    if not name:
        return False
    text = str(name)
    path_like = text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1
    return path_like and not Path(text).expanduser().exists()


def model_context(model_path: str | None) -> int | None:
    """The longest sequence a local model takes (its config's positions), or None when unknown (a hub id)."""
    config = Path(model_path) / "config.json" if model_path else None
    if config is None or not is_regular_file(config):
        return None
    try:
        data = json.loads(read_user_text(config, JSON_LIMIT))
    except (ValueError, OSError):
        return None
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):  # the order lm-eval reads them in
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def is_report_dir(path: Path) -> bool:
    """A report written by ``compare`` (e.g. ``runs/report`` from an earlier ``--output``)."""
    return (path / "results.json").is_file() and (path / "results").is_dir()


# What compare looks for, said when it finds nothing to evaluate.
RUN_LAYOUT = (
    "config.json and model.safetensors (full fine-tune or LISA) or adapter_config.json and "
    "adapter_model.safetensors (LoRA/QLoRA), with the axolotl config saved in README.md or debug.log"
)


def looks_like_run(path: Path) -> bool:
    markers = ("config.json", "adapter_config.json", "debug.log", "model.safetensors", "adapter_model.safetensors")
    if any((path / m).exists() for m in markers):
        return True
    try:
        return (path / "README.md").exists() and bool(read_axolotl_config(path)[0])
    except RunError:  # a model card that cannot be read says nothing about the folder
        return False


def special_files(run_dir: Path) -> list[str]:
    """FIFOs, sockets and devices among a run dir's files: a model or tokenizer loader would block on them."""
    found = []
    try:
        entries = sorted(os.scandir(run_dir), key=lambda e: e.name)
    except OSError as exc:
        return [f"{run_dir}: cannot list its files ({exc})"]
    for entry in entries:
        try:
            mode = os.stat(entry.path).st_mode  # through symlinks: debug.log -> /dev/zero counts
        except OSError:
            continue  # a dangling link is the loaders' "missing file", not a hang
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            found.append(f"{entry.path}: not a regular file (a FIFO, socket or device); loading the run would read it "
                         "and could wait forever, so the run is not evaluated; replace it with a regular file")
    return found


def _adapter_config(adapter_file: Path) -> dict[str, Any]:
    try:
        adapter_cfg = json.loads(_read(adapter_file, JSON_LIMIT))
    except json.JSONDecodeError as exc:
        raise RunError(f"{adapter_file}: not valid JSON ({exc})") from None
    if not isinstance(adapter_cfg, dict):
        raise RunError(f"{adapter_file}: a JSON {type(adapter_cfg).__name__}; expected a PEFT adapter config object")
    return adapter_cfg


def _read_adapter(run: Run, adapter_file: Path, adapter_cfg: dict[str, Any], cfg: dict[str, Any] | None) -> None:
    """A PEFT adapter run: its base model (which must exist when written as a path) and adapter weights."""
    run_dir = adapter_file.parent
    base = adapter_cfg.get("base_model_name_or_path") or (cfg or {}).get("base_model")
    if not base:
        raise RunError(f"{adapter_file}: no 'base_model_name_or_path', and no base_model in the axolotl config")
    run.base_model = normalise_model_id(str(base), run_dir)
    if missing_local_model(run.base_model):
        raise RunError(f"{adapter_file}: base model {run.base_model!r} does not exist (a local path, not a "
                       "hub id such as 'org/name'); restore it there, or set base_model_name_or_path to "
                       "where the base model is now")
    run.model_path = run.base_model
    run.adapter_path = str(run_dir.resolve())
    run.training.trainable_params = check_weights(run_dir, "adapter_model") or None


def read_run(run_dir: Path) -> Run:
    """One Axolotl output dir as a :class:`Run`; problems land in ``errors``, never raise."""
    run = Run(name=run_dir.name, method="Full", model_path=str(run_dir.resolve()), adapter_path=None,
              base_model=None, path=str(run_dir.resolve()))
    cfg: dict[str, Any] | None = None
    run.errors += special_files(run_dir)
    try:
        cfg, run.config_source = read_axolotl_config(run_dir)
    except RunError as exc:
        run.warnings.append(str(exc))
    adapter_cfg = None
    adapter_file = run_dir / "adapter_config.json"
    try:
        if adapter_file.exists():
            adapter_cfg = _adapter_config(adapter_file)
            _read_adapter(run, adapter_file, adapter_cfg, cfg)
        else:
            if not (run_dir / "config.json").exists():
                raise RunError(f"{run_dir}: neither config.json (full weights) nor adapter_config.json (PEFT adapter)")
            run.base_model = normalise_model_id((cfg or {}).get("base_model"), run_dir)
            run.training.total_params = check_weights(run_dir, "model") or None
    except RunError as exc:
        run.errors.append(str(exc))
    if cfg is None:
        run.warnings.append(f"{run_dir}: no axolotl config in README.md or debug.log; method guessed from the files")
    run.method, run.settings = method_from_evidence(run_dir, cfg, adapter_cfg, run.config_source, run.warnings)
    facts = read_training_facts(run_dir, cfg, run.warnings)
    facts.trainable_params = facts.trainable_params or run.training.trainable_params
    facts.total_params = facts.total_params or run.training.total_params
    if run.method == "Full" and facts.trainable_params is None:
        facts.trainable_params = facts.total_params
    run.training = facts
    if run.method == "LISA":
        try:
            history = read_lisa_history(run_dir)
        except ValueError as exc:
            run.warnings.append(f"{exc}; LISA settings taken from the axolotl config")
            history = None
        if history is not None:
            saved = history.settings
            run.settings.update(
                {"gamma": saved.get("n_layers", run.settings.get("gamma")),
                 "K": saved.get("interval_steps", run.settings.get("K"))}
            )
    return run


def parse_overrides(pairs: list[str], flag: str) -> dict[str, str]:
    """``["lora=LoRA", ...]`` → ``{"lora": "LoRA"}``; a malformed pair names the flag and the value."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {pair!r}: expected RUN=VALUE")
        out[name] = value
    return out


def apply_overrides(run: Run, method: str | None, settings: dict[str, str]) -> None:
    if method:
        canonical = {m.lower(): m for m in METHODS}.get(method.lower(), method)
        run.method = canonical
    for key, value in settings.items():
        try:
            run.settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            run.settings[key] = value


def _candidates(runs_dir: Path, exclude: list[Path], problems: list[str]) -> list[Path]:
    """The folders that may be runs: ``runs_dir`` itself when it is one, else its subfolders (reserved names
    refused)."""
    excluded = {Path(p).resolve() for p in exclude}
    if looks_like_run(runs_dir):
        candidates = [runs_dir]
    else:
        candidates = sorted(
            p for p in runs_dir.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_")) and p.resolve() not in excluded
            and not is_report_dir(p)
        )
    for path in [p for p in candidates if p.name.lower() in RESERVED_NAMES]:
        problems.append(f"{path}: a run folder may not be named {path.name!r}: compare names the base model's row "
                        f"{VANILLA!r}, and the two would share one row and one results folder; rename the folder "
                        "(e.g. to vanilla-ft) to evaluate it; skipped")
        candidates.remove(path)
    return candidates


def discover_runs(
    runs_dir: Path,
    *,
    exclude: list[Path] = (),
    base_model: str | None = None,
    method_overrides: dict[str, str] | None = None,
    setting_overrides: dict[str, dict[str, str]] | None = None,
    include_vanilla: bool = True,
) -> Discovery:
    """Every run under ``runs_dir`` (or ``runs_dir`` itself when it is one run), plus a Vanilla row.

    Runs whose base model differs from the common one (the most frequent, or ``base_model``)
    get an error: their scores would not be comparable.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs dir {runs_dir} does not exist or is not a directory")
    problems: list[str] = []
    runs: list[Run] = []
    for path in _candidates(runs_dir, exclude, problems):
        if not looks_like_run(path):
            problems.append(f"{path}: not an Axolotl output dir (no config.json, adapter_config.json, "
                            "model weights, debug.log or model card with an axolotl config); skipped")
            continue
        runs.append(read_run(path))
    method_overrides = method_overrides or {}
    setting_overrides = setting_overrides or {}
    for name in list(method_overrides) + list(setting_overrides):
        if name not in {r.name for r in runs} | {VANILLA}:
            problems.append(f"override for run {name!r}: no such run (found: {', '.join(r.name for r in runs)})")
    bases = [r.base_model for r in runs if r.base_model and r.ok]
    common = normalise_model_id(base_model) if base_model else (Counter(bases).most_common(1)[0][0] if bases else None)
    for run in runs:
        if run.base_model and common and run.base_model != common:
            run.errors.append(
                f"{run.path}: base model {run.base_model!r} differs from the other runs' {common!r}; "
                "its scores would not be comparable, so it is not evaluated (pass --base-model to choose)"
            )
    if include_vanilla and common:
        vanilla = Run(name=VANILLA, method=VANILLA, model_path=common, adapter_path=None, base_model=common)
        if missing_local_model(common):
            vanilla.errors.append(f"base model {common!r} does not exist (a local path, not a hub id such as "
                                  "'org/name'); pass --base-model with where it is now")
        runs.insert(0, vanilla)
    for run in runs:
        apply_overrides(run, method_overrides.get(run.name), setting_overrides.get(run.name, {}))
    return Discovery(runs=runs, problems=problems, base_model=common)
