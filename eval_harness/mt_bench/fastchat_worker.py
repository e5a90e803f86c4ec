"""FastChat's model worker, runnable with transformers 5: ``python -m eval_harness.mt_bench.fastchat_worker``.

Takes exactly ``python -m fastchat.serve.model_worker``'s arguments. fschat 0.2.36's
``get_context_length`` reads ``config.rope_scaling["factor"]`` whenever ``rope_scaling`` is
truthy; transformers 5 always fills ``rope_scaling`` (an alias of ``rope_parameters``) with
``{"rope_type": "default", "rope_theta": ...}``, which has no factor, so every RoPE model
crashes the worker at start-up with ``KeyError: 'factor'`` (FastChat #3470). This launcher
replaces that one function, in memory only, with one that treats a missing factor as 1,
then runs the worker's own ``__main__``.
"""

from __future__ import annotations

import runpy


def get_context_length(config) -> int:
    """FastChat's context length (first known max-length key times the RoPE factor), tolerating no factor."""
    from fastchat.utils import SEQUENCE_LENGTH_KEYS

    rope = getattr(config, "rope_scaling", None)
    factor = (rope.get("factor") if isinstance(rope, dict) else None) or 1
    for key in SEQUENCE_LENGTH_KEYS:
        value = getattr(config, key, None)
        if value is not None:
            return int(factor * value)
    return 2048


def patch_fastchat() -> None:
    import fastchat.utils

    fastchat.utils.get_context_length = get_context_length
    # modules that imported the name before the patch keep their own binding
    import fastchat.serve.inference

    fastchat.serve.inference.get_context_length = get_context_length


def main() -> None:
    patch_fastchat()
    runpy.run_module("fastchat.serve.model_worker", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
