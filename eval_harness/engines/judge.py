"""A judge served by the engine: ``compare --judge-engine-model DIR`` starts a vLLM server of a local judge
model from the engine environment (once per comparison, on first need) and judges through it.

The server's URL changes with every start (a free port), so the judge names itself by what it is (engine,
version, model folder) instead: its verdicts are reused by the next comparison with the same judge.
"""

from __future__ import annotations

from eval_harness.judges import JudgeSettings, OpenAICompatibleJudge


class EngineJudge(OpenAICompatibleJudge):
    """The OpenAI-compatible judge on a server we started, identified by ``stable_endpoint``, not its port."""

    def __init__(self, settings: JudgeSettings, stable_endpoint: str):
        super().__init__(settings)
        self.stable_endpoint = stable_endpoint

    @property
    def endpoint(self) -> str:
        return self.stable_endpoint

    def identity(self) -> dict:
        return {**super().identity(), "base_url": self.stable_endpoint}


def stable_endpoint(identity: dict, model_dir: str) -> str:
    """e.g. ``engine:vllm-0.32.0:/models/judge``: the judge's name in caches and records."""
    return f"engine:{identity.get('engine')}-{identity.get('version')}:{model_dir}"
