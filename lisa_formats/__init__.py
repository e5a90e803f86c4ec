"""File formats shared by ``lisa_plugin`` and ``eval_harness``, and how to write them safely.

Standard library only (no torch, numpy or transformers), so the evaluation harness and
its report can read what training wrote without importing training code:

* :mod:`lisa_formats.atomic`: write a file so a crash leaves the old one or the new one;
* :mod:`lisa_formats.jsonl`: append-only JSONL that survives being killed mid-write;
* :mod:`lisa_formats.history`: ``lisa_history.json`` (``lisa_history/1``);
* :mod:`lisa_formats.norms`: ``norms.json`` (``lisa_norms/1``);
* :mod:`lisa_formats.suggest`: the one "did you mean ...?" of both packages.
"""
