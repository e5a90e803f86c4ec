"""The judge protocol: what MT-Bench grading needs from an LLM judge, whoever serves it.

A judge turns FastChat's (system prompt, user prompt) into the verdict text; the grading code
(:mod:`eval_harness.mt_bench.judge`, ``.pairwise``) parses ratings and stores records, and never
knows how the verdict was produced. :class:`~eval_harness.judges.openai_compat.OpenAICompatibleJudge`
is the first implementation; another (an in-process model, another vendor's API) only has to
provide these members.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class JudgeError(RuntimeError):
    """The judge cannot be used at all (bad key, unknown model or URL, retries exhausted): stop."""


class JudgeRetriesExhausted(JudgeError):
    """This request still failed (429/5xx/408, timeouts) after every retry: the item is stored as an error.

    A run that gets only these, with no verdict in between, stops instead: the judge is down.
    """


class JudgeCancelled(JudgeError):
    """The run is stopping (Ctrl-C, another item's fatal error): a back-off or request was cut short."""


class JudgeRequestError(RuntimeError):
    """The judge refused this one request (e.g. prompt too long): that item is skipped, others go on."""


@runtime_checkable
class Judge(Protocol):
    """An LLM judge. Calls may come from several threads at once."""

    @property
    def model(self) -> str:
        """The judge's name as stored in FastChat's judgment records (``"judge": [model, prompt]``)."""

    def identity(self) -> dict[str, Any]:
        """What changes verdicts (model, endpoint, sampling): part of cache keys; never a secret."""

    def complete(self, system: str, user: str) -> str:
        """The verdict text for one judge prompt.

        :raises JudgeRequestError: this request was refused; the caller skips the item.
        :raises JudgeError: the judge is unusable; the caller stops.
        """

    def close(self) -> None:
        """Release connections; the judge is not used afterwards."""

    # Optional: ``cancel()`` ends every back-off and open request at once (raising JudgeCancelled in
    # them); the grading loop calls it, when present, on Ctrl-C or a fatal error.
