"""Preprocessing for the task YAMLs beside this file (lm-eval imports it by path)."""

from __future__ import annotations

import re

_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def strip_calculator_notes(solution: str) -> str:
    """A GSM8K solution without its "<<48/2=24>>" calculator notes."""
    return _CALCULATOR_NOTE.sub("", solution)


def gsm8k_without_calculator_notes(dataset):
    return dataset.map(lambda doc: {"answer": strip_calculator_notes(doc["answer"])})


def pubmedqa_prompt(doc: dict) -> str:
    labels = doc.get("labels") or []
    sections = [
        f"{label.capitalize()}: {text}" if label else text
        for label, text in zip(labels + [""] * (len(doc["contexts"]) - len(labels)), doc["contexts"])
    ]
    return "Abstract:\n" + "\n".join(sections) + f"\nQuestion: {doc['question']}\nAnswer:"
