"""The example configs shipped with the package, and running ``axolotl train`` on them."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path


def example_configs_dir() -> Path:
    """The folder of shipped example configs (``lisa_plugin/example_configs``), also from a wheel."""
    return Path(str(resources.files("lisa_plugin.example_configs")))


def example_config(name: str) -> Path:
    """A shipped example config by file name (``tiny-lisa.yml``, ``multi-gpu/...``)."""
    path = example_configs_dir() / name
    if not path.is_file():
        from lisa_formats.suggest import unknown

        names = [str(p.relative_to(example_configs_dir())) for p in example_configs_dir().rglob("*.y*ml")]
        raise FileNotFoundError(unknown("example config", name, names))
    return path


def build_tiny(out: Path, arch: str = "llama", num_layers: int = 6) -> Path:
    """The tiny offline model (``out/model``) and instruction data (``out/train.jsonl``)."""
    from lisa_plugin.tools.tiny import TinySpec, build_tiny_model, write_instruction_data

    build_tiny_model(out / "model", TinySpec(arch=arch, num_layers=num_layers))
    write_instruction_data(out / "train.jsonl", n=512)
    print(f"tiny {arch} model, tokenizer and data written to {out}")
    return out


def write_config(
    template: Path, tiny: Path, output_dir: Path, dest: Path, *,
    dataset: Path | None = None, prepared: Path | None = None, overrides: dict | None = None,
) -> Path:
    """Copy an example config, pointing its paths at ``tiny`` (``model/``, ``train.jsonl``,
    ``prepared/`` unless ``dataset``/``prepared`` say otherwise) and ``output_dir``;
    ``overrides`` replace top-level keys (e.g. ``max_steps``)."""
    import yaml

    cfg = yaml.safe_load(Path(template).read_text())
    cfg["base_model"] = str(tiny / "model")
    cfg["datasets"][0]["path"] = str(dataset or tiny / "train.jsonl")
    cfg["dataset_prepared_path"] = str(prepared or tiny / "prepared")
    cfg["output_dir"] = str(output_dir)
    cfg.update(overrides or {})
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def axolotl_env() -> dict[str, str]:
    """The environment ``axolotl train`` runs in: offline, no telemetry, this interpreter's tools."""
    env = dict(os.environ)
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `axolotl train` re-launches through `accelerate` found on PATH: use this interpreter's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def axolotl_command() -> list[str]:
    """``axolotl`` run by this interpreter, so it loads the plugin installed beside it.

    With ``--launcher python`` after ``train`` the whole run stays in that process (the
    default launcher re-starts through whichever ``accelerate`` is first on PATH).
    """
    return [sys.executable, "-m", "axolotl.cli.main"]
