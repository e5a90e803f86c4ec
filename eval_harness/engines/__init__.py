"""Generation backends: where MT-Bench answers and lm-eval samples are generated.

``hf`` (the default) generates with ``transformers`` in the harness's own process. ``server`` sends
the same prompts to an OpenAI-compatible endpoint: one the user runs (``--server-url``), or a vLLM
server the harness starts and stops for each run from an engine environment of its own
(``--engine-python``; ``python -m eval_harness engine setup`` builds one). vLLM cannot share a venv
with Axolotl (conflicting pins), so the engine always runs as a separate process, reached over HTTP.

* :mod:`~eval_harness.engines.backend`: the settings, and the identity (backend, engine, version)
  every cache key carries, so switching backend never reuses a result;
* :mod:`~eval_harness.engines.server`: starting, waiting for, probing and stopping a server;
* :mod:`~eval_harness.engines.completions`: MT-Bench prompts through ``/v1/completions``;
* :mod:`~eval_harness.engines.merge`: a LoRA run's adapter merged into a cached full copy to serve;
* :mod:`~eval_harness.engines.environment`: ``engine setup``, the engine's own venv.
"""

from eval_harness.engines.backend import HF, SERVER, BackendSettings, Endpoint, hf_identity, sane_threads

__all__ = ["HF", "SERVER", "BackendSettings", "Endpoint", "hf_identity", "sane_threads"]
