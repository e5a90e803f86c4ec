"""LLM judges for MT-Bench: the :class:`Judge` protocol and its OpenAI-compatible implementation."""

from eval_harness.judges.base import Judge, JudgeCancelled, JudgeError, JudgeRequestError, JudgeRetriesExhausted
from eval_harness.judges.openai_compat import API_KEY_ENV, JudgeSettings, OpenAICompatibleJudge, missing_api_key

__all__ = ["API_KEY_ENV", "Judge", "JudgeCancelled", "JudgeError", "JudgeRequestError", "JudgeRetriesExhausted",
           "JudgeSettings", "OpenAICompatibleJudge", "missing_api_key"]
