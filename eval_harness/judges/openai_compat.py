"""The first :class:`~eval_harness.judges.base.Judge`: any OpenAI-compatible chat-completions endpoint.

OpenAI, vLLM, FastChat's openai_api_server, Ollama. 429/5xx and timeouts are retried with
exponential backoff; 401/403/404 stop at once (:class:`JudgeError`); any other refusal skips
that one request (:class:`JudgeRequestError`). The key comes from ``$OPENAI_API_KEY`` only and
is redacted from every message.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass

from eval_harness.judges.base import JudgeError, JudgeRequestError

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class JudgeSettings:
    """Which judge grades the answers. The API key comes from ``$OPENAI_API_KEY`` only."""

    model: str = "gpt-4"
    base_url: str | None = None  # None: OpenAI; e.g. http://localhost:8000/v1 for vLLM/FastChat/Ollama
    repeats: int = 1
    concurrency: int = 4
    max_tokens: int = 2048  # FastChat's judge call: temperature 0, 2048 tokens
    temperature: float = 0.0
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0  # first retry delay; doubles per attempt, capped at 60 s

    def __post_init__(self):
        for name, minimum in (("repeats", 1), ("concurrency", 1), ("max_tokens", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"JudgeSettings.{name}: got {value!r}; expected an integer >= {minimum}")
        if not self.model:
            raise ValueError("JudgeSettings.model: got an empty name; expected the judge model's name, e.g. gpt-4")


def missing_api_key(base_url: str | None) -> str | None:
    """Why the judge cannot be called without a key (OpenAI itself needs one), or None."""
    if os.environ.get(API_KEY_ENV) or base_url is not None:
        return None
    return f"{API_KEY_ENV} is not set; the OpenAI API needs it (or set base_url to a local judge)"


class OpenAICompatibleJudge:
    """A :class:`~eval_harness.judges.base.Judge` over ``/v1/chat/completions``; its errors never carry the key."""

    def __init__(self, settings: JudgeSettings):
        import httpx

        self.settings = settings
        self.url = (settings.base_url or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
        problem = missing_api_key(settings.base_url)
        if problem:
            raise JudgeError(problem)
        self._key = os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._http = httpx.Client(headers=headers, timeout=settings.timeout_s)
        self._rng = random.Random(0)  # jitter only; seeded so runs are repeatable

    @property
    def model(self) -> str:
        return self.settings.model

    def identity(self) -> dict:
        s = self.settings
        return {"model": s.model, "base_url": s.base_url, "temperature": s.temperature, "max_tokens": s.max_tokens}

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def complete(self, system: str, user: str) -> str:
        import httpx

        s = self.settings
        body = {
            "model": s.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        where = f"judge {s.model!r} at {self.url}"
        for attempt in range(s.max_retries + 1):
            last = attempt == s.max_retries
            try:
                response = self._http.post(self.url, json=body)
            except httpx.TransportError as exc:  # timeouts, refused/reset connections
                problem = f"{type(exc).__name__}: {self.redact(str(exc))}"
                if last:
                    raise JudgeError(f"{where}: {problem}; gave up after {attempt + 1} attempts") from None
                self._sleep(attempt, None, problem)
                continue
            status = response.status_code
            if status == 200:
                return self._content(response, where)
            detail = self.redact(response.text[:500])
            if status in (401, 403):
                raise JudgeError(
                    f"{where}: HTTP {status} ({detail}); the API key in ${API_KEY_ENV} was refused "
                    "(key not shown); check it is set and valid for this endpoint"
                )
            if status == 404:
                raise JudgeError(
                    f"{where}: HTTP 404 ({detail}); expected an OpenAI-compatible endpoint serving model "
                    f"{s.model!r}: check base_url (it usually ends in /v1) and the model name"
                )
            if status == 429 or status >= 500:
                if last:
                    raise JudgeError(f"{where}: HTTP {status} ({detail}); gave up after {attempt + 1} attempts")
                self._sleep(attempt, response.headers.get("retry-after"), f"HTTP {status}")
                continue
            raise JudgeRequestError(f"{where}: HTTP {status} ({detail})")
        raise AssertionError("unreachable")

    def _content(self, response, where: str) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeRequestError(
                f"{where}: reply is not a chat completion ({self.redact(response.text[:300])!r}); "
                "expected choices[0].message.content"
            ) from None
        if not isinstance(content, str):
            raise JudgeRequestError(f"{where}: choices[0].message.content is {content!r}; expected a string")
        return content

    def _sleep(self, attempt: int, retry_after: str | None, problem: str) -> None:
        delay = min(60.0, self.settings.backoff_s * 2**attempt) * (1 + 0.1 * self._rng.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        logger.warning("judge %s: %s; retry %d in %.2fs", self.settings.model, problem, attempt + 1, delay)
        time.sleep(delay)

    def close(self) -> None:
        self._http.close()
