"""The first :class:`~eval_harness.judges.base.Judge`: any OpenAI-compatible chat-completions endpoint.

OpenAI, vLLM, FastChat's openai_api_server, Ollama. 408/429/5xx and timeouts are retried with
exponential backoff, then raise :class:`JudgeRetriesExhausted` (the item is stored as an error);
401/403/404 stop at once (:class:`JudgeError`); any other refusal skips that one request
(:class:`JudgeRequestError`). The key comes from ``$OPENAI_API_KEY`` only and
is redacted from every message and every verdict, before any text is cut short.

Every wait is bounded: a request has a deadline for its whole reply (``deadline_s``; a server
that sends one byte at a time cannot stretch it), and a ``Retry-After`` longer than
``max_retry_after_s`` stops the run with a message instead of sleeping (seconds or an HTTP date).
:meth:`OpenAICompatibleJudge.cancel` (called on Ctrl-C) ends every back-off and open request at once.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

from eval_harness.judges.base import JudgeCancelled, JudgeError, JudgeRequestError, JudgeRetriesExhausted

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
    deadline_s: float = 600.0  # the whole reply of one request, however slowly it trickles in
    max_retry_after_s: float = 120.0  # a server asking to wait longer (Retry-After) stops the run
    max_reply_bytes: int = 16 * 2**20
    rejudge_failed: bool = False  # re-ask stored parse failures and errors (never part of a cache key)
    # A regular expression the server must make the verdict match (vLLM's `structured_outputs`); None: free text,
    # as FastChat asks (the format is requested in the prompt only). Part of the identity, so of every cache key.
    verdict_regex: str | None = None

    def __post_init__(self):
        for name, minimum in (("repeats", 1), ("concurrency", 1), ("max_tokens", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"JudgeSettings.{name}: got {value!r}; expected an integer >= {minimum}")
        for name in ("timeout_s", "deadline_s", "max_retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"JudgeSettings.{name}: got {value!r}; expected a positive number of seconds")
        if not self.model:
            raise ValueError("JudgeSettings.model: got an empty name; expected the judge model's name, e.g. gpt-4")


def redact_key(text: str, key: str | None = None) -> str:
    """``text`` without the API key (``key``, else ``$OPENAI_API_KEY``): redact whole texts, then cut them."""
    key = key if key is not None else os.environ.get(API_KEY_ENV)
    if not key or len(key) < 4:  # a 1-3 character "key" would blank out ordinary words
        return text
    return text.replace(key, "***")


def retry_after_seconds(value: str, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP date (RFC 9110); None if neither."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN is garbage


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def missing_api_key(base_url: str | None) -> str | None:
    """Why the judge cannot be called without a key (OpenAI itself needs one), or None."""
    if os.environ.get(API_KEY_ENV) or base_url is not None:
        return None
    return f"{API_KEY_ENV} is not set; the OpenAI API needs it (or set base_url to a local judge)"


class _Reply:
    """A reply read in full within the deadline."""

    def __init__(self, status: int, headers, raw: bytes):
        self.status_code, self.headers, self.raw = status, headers, raw
        self.text = raw.decode("utf-8", errors="replace")


class _Retryable(Exception):
    """A request that may succeed when sent again: no reply in time, or a transport error."""


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
        # one connection per request: the deadline watchdog shuts down exactly that request's socket
        self._http = httpx.Client(headers=headers, timeout=settings.timeout_s,
                                  limits=httpx.Limits(max_keepalive_connections=0))
        self._rng = random.Random(0)  # jitter only; seeded so runs are repeatable
        self._served: set[str] = set()
        self._served_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._local = threading.local()  # the served model name of this thread's last reply
        self._open: set = set()  # the watchdog "expire" of every request in flight, for cancel()

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def endpoint(self) -> str:
        """The chat-completions base URL this judge calls (OpenAI's when none was given)."""
        return (self.settings.base_url or OPENAI_BASE_URL).rstrip("/")

    def served_models(self) -> list[str]:
        """The model names the server put in its replies so far (what really judged)."""
        with self._served_lock:
            return sorted(self._served)

    def served_model(self) -> str | None:
        """The ``model`` field of the reply to this thread's last :meth:`complete` (None if it had none)."""
        return getattr(self._local, "served", None)

    def identity(self) -> dict:
        s = self.settings
        identity = {"model": s.model, "base_url": s.base_url, "temperature": s.temperature, "max_tokens": s.max_tokens}
        if s.verdict_regex is not None:  # only when set: free-text verdicts keep the keys they always had
            identity["verdict_regex"] = s.verdict_regex
        return identity

    def redact(self, text: str) -> str:
        return redact_key(text, self._key or "")

    def complete(self, system: str, user: str) -> str:
        s = self.settings
        body = {
            "model": s.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        if s.verdict_regex is not None:
            body["structured_outputs"] = {"regex": s.verdict_regex}
        where = f"judge {s.model!r} at {self.url}"
        for attempt in range(s.max_retries + 1):
            last = attempt == s.max_retries
            try:
                response = self._post(body)
            except _Retryable as exc:
                problem = str(exc)
            else:
                verdict = self._handle(response, where, attempt, last)
                if verdict is not None:
                    return verdict
                continue
            if last:
                raise JudgeRetriesExhausted(f"{where}: {problem}; gave up after {attempt + 1} attempts") from None
            self._sleep(attempt, None, problem)
        raise AssertionError("unreachable")

    def _handle(self, response: _Reply, where: str, attempt: int, last: bool) -> str | None:
        """The verdict of a 200; None after waiting for a retry; raises for the rest."""
        status = response.status_code
        if status == 200:
            return self._content(response, where)
        detail = _clip(self.redact(response.text), 500)  # redacted whole, then cut: no piece of the key survives
        if status in (401, 403):
            raise JudgeError(
                f"{where}: HTTP {status} ({detail}); the API key in ${API_KEY_ENV} was refused "
                "(key not shown); check it is set and valid for this endpoint"
            )
        if status == 404:
            raise JudgeError(
                f"{where}: HTTP 404 ({detail}); expected an OpenAI-compatible endpoint serving model "
                f"{self.settings.model!r}: check base_url (it usually ends in /v1) and the model name"
            )
        if status in (408, 429) or status >= 500:
            if last:
                raise JudgeRetriesExhausted(f"{where}: HTTP {status} ({detail}); gave up after {attempt + 1} attempts")
            self._sleep(attempt, response.headers.get("retry-after"), f"HTTP {status}")
            return None
        raise JudgeRequestError(f"{where}: HTTP {status} ({detail})")

    def _post(self, body: dict) -> _Reply:
        """POST ``body``; the whole reply must arrive within ``deadline_s`` (a watchdog shuts the socket)."""
        import httpx

        s = self.settings
        sockets: list[socket.socket] = []
        expired = threading.Event()

        def shut(sock) -> None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def trace(event: str, info: dict) -> None:
            if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    sockets.append(sock)
                    if expired.is_set():
                        shut(sock)

        def expire() -> None:
            expired.set()
            for sock in list(sockets):
                shut(sock)

        timer = threading.Timer(s.deadline_s, expire)
        timer.daemon = True
        timer.start()
        with self._served_lock:
            self._open.add(expire)
        try:
            if self._cancelled.is_set():
                raise JudgeCancelled(f"judge {s.model!r}: cancelled")
            with self._http.stream("POST", self.url, json=body, extensions={"trace": trace}) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if expired.is_set():
                        break
                    if len(raw) > s.max_reply_bytes:
                        raise JudgeRequestError(f"judge {s.model!r} at {self.url}: reply larger than "
                                                f"{s.max_reply_bytes} bytes; not read further")
                if expired.is_set():
                    self._raise_if_cancelled()
                    raise _Retryable(f"no complete reply within {s.deadline_s:g} s (deadline_s)")
                return _Reply(response.status_code, response.headers, bytes(raw))
        except httpx.TransportError as exc:  # timeouts, refused/reset connections, the watchdog's shutdown
            if expired.is_set():
                self._raise_if_cancelled()
                raise _Retryable(f"no complete reply within {s.deadline_s:g} s (deadline_s)") from None
            raise _Retryable(f"{type(exc).__name__}: {self.redact(str(exc))}") from None
        finally:
            timer.cancel()
            with self._served_lock:
                self._open.discard(expire)

    def cancel(self) -> None:
        """End every back-off and open request now (they raise :class:`JudgeCancelled`); for Ctrl-C."""
        self._cancelled.set()
        with self._served_lock:
            pending = list(self._open)
        for expire in pending:
            expire()

    def _raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JudgeCancelled(f"judge {self.settings.model!r} at {self.url}: cancelled (the run is stopping)")

    def _content(self, response: _Reply, where: str) -> str:
        try:
            reply = json.loads(response.raw)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeRequestError(
                f"{where}: reply is not a chat completion ({_clip(self.redact(response.text), 300)!r}); "
                "expected choices[0].message.content"
            ) from None
        if not isinstance(content, str):
            raise JudgeRequestError(f"{where}: choices[0].message.content is {content!r}; expected a string")
        served = reply.get("model") if isinstance(reply, dict) else None
        self._local.served = self.redact(served)[:200] if isinstance(served, str) and served else None
        if self._local.served:
            with self._served_lock:
                self._served.add(self._local.served)
        return self.redact(content)  # a server echoing the Authorization header must not get the key stored

    def _sleep(self, attempt: int, retry_after: str | None, problem: str) -> None:
        s = self.settings
        delay = min(60.0, s.backoff_s * 2**attempt) * (1 + 0.1 * self._rng.random())
        if retry_after:
            asked = retry_after_seconds(retry_after)  # None for garbage: our own backoff
            if asked is not None and asked > s.max_retry_after_s:
                raise JudgeError(
                    f"judge {s.model!r} at {self.url}: {problem} with Retry-After "
                    f"{_clip(self.redact(retry_after), 40)!r} s, "
                    f"longer than the {s.max_retry_after_s:g} s this run waits (max_retry_after_s); try again later"
                )
            if asked is not None and asked > delay:
                delay = asked
        logger.warning("judge %s: %s; retry %d in %.2fs", s.model, problem, attempt + 1, delay)
        if self._cancelled.wait(delay):  # not time.sleep: Ctrl-C must not wait out a 60 s back-off
            self._raise_if_cancelled()

    def close(self) -> None:
        self._http.close()
