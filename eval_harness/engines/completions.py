"""Prompts through a server's ``/v1/completions``, several in flight at once.

MT-Bench answers are rendered by our own :class:`~eval_harness.mt_bench.answer.ChatFormat` (so the
server sees the very prompt string the hf backend tokenizes) and sent as plain completions.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from eval_harness.engines.backend import Endpoint

REQUEST_TIMEOUT_S = 600.0
RETRIES = 3


class CompletionError(RuntimeError):
    """The server refused a completion, or kept failing after the retries."""


@dataclass(frozen=True)
class Sampling:
    """One request's decoding: greedy at temperature 0, as the hf backend decodes below FastChat's threshold."""

    max_tokens: int
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)  # vLLM's extension; others ignore it
    add_special_tokens: bool = True  # False: the prompt carries its own BOS (a chat template wrote it)
    seed: int | None = None


def request_body(model: str, prompt: str, sampling: Sampling) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
            "n": 1, "stop_token_ids": sampling.stop_token_ids, "add_special_tokens": sampling.add_special_tokens,
            "skip_special_tokens": True, "return_token_ids": True}
    if sampling.stop:
        body["stop"] = sampling.stop
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


def complete(endpoint: Endpoint, prompt: str, sampling: Sampling) -> dict:
    """The server's choice for ``prompt`` (``text``; vLLM adds ``token_ids``); connection errors and 5xx are retried."""
    data = json.dumps(request_body(endpoint.model, prompt, sampling)).encode()
    request = urllib.request.Request(f"{endpoint.base_url}/v1/completions", data=data,
                                     headers={"Content-Type": "application/json"})
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:  # noqa: S310
                choice = json.loads(reply.read())["choices"][0]
                if not isinstance(choice.get("text"), str):
                    raise ValueError(f"a choice without text: {str(choice)[:200]}")
                return choice
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode(errors="replace")
            if exc.code < 500 or attempt == RETRIES:
                raise CompletionError(f"{endpoint.base_url}/v1/completions ({endpoint.model}): HTTP {exc.code}: "
                                      f"{detail}") from None
        except (OSError, ValueError, KeyError, IndexError) as exc:
            if attempt == RETRIES:
                raise CompletionError(f"{endpoint.base_url}/v1/completions ({endpoint.model}): {exc} "
                                      f"(after {RETRIES} retries)") from None
        time.sleep(2**attempt)
    raise AssertionError("unreachable")


def complete_all(endpoint: Endpoint, prompts: list[str], samplings: list[Sampling], concurrency: int) -> list[dict]:
    """Every prompt's choice, in order, with up to ``concurrency`` requests in flight."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(prompts))))
    try:
        futures = [pool.submit(complete, endpoint, p, s) for p, s in zip(prompts, samplings)]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: queued requests never start
