"""File formats shared by ``lisa_plugin`` and ``eval_harness``, and how to write them safely.

Standard library only (no torch, numpy or transformers), so the evaluation harness and
its report can read what training wrote without importing training code:

* :mod:`lisa_formats.atomic`: write a file so a crash leaves the old one or the new one;
* :mod:`lisa_formats.jsonl`: append-only JSONL that survives being killed mid-write;
* :mod:`lisa_formats.history`: ``lisa_history.json`` (``lisa_history/1``);
* :mod:`lisa_formats.norms`: ``norms.json`` (``lisa_norms/1``);
* :mod:`lisa_formats.resources`: ``run_resources.json`` (``lisa_resources/1``), a run's measured peak memory;
* :mod:`lisa_formats.model_source`: ``lisa_model_source.json`` (``lisa_model_source/1``), where a cached model's weights came from;
* :mod:`lisa_formats.suggest`: the one "did you mean ...?" of both packages;
* :mod:`lisa_formats.quiet`: named third-party log lines dropped or reworded, here and in child processes;
* :mod:`lisa_formats.userfiles`: bounded reads of files in a user's folder (no FIFO, device or runaway size);
* :mod:`lisa_formats.escape`: untrusted text made inert for a terminal, Markdown and CSV.
"""
