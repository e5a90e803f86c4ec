"""Preprocessing for the variant task YAMLs beside this file (lm-eval imports it by path)."""

from __future__ import annotations

import re

_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def strip_calculator_notes(solution: str) -> str:
    """A GSM8K solution without its "<<48/2=24>>" calculator notes."""
    return _CALCULATOR_NOTE.sub("", solution)


def gsm8k_without_calculator_notes(dataset):
    return dataset.map(lambda doc: {"answer": strip_calculator_notes(doc["answer"])})


def pubmedqa_labelled_prompt(doc: dict) -> str:
    """The abstract one labelled section per line ("Methods: ..."), then the question."""
    contexts = doc["CONTEXTS"]
    labels = list(doc.get("LABELS") or [])
    labels += [""] * (len(contexts) - len(labels))
    sections = [f"{label.capitalize()}: {text}" if label else text for label, text in zip(labels, contexts)]
    return "Abstract:\n" + "\n".join(sections) + f"\nQuestion: {doc['QUESTION']}\nAnswer:"
