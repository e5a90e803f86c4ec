"""Demos that compose the two packages; nothing in ``lisa_plugin`` or ``eval_harness`` imports this.

* ``lisa-demo-train OUTDIR`` (:mod:`lisa_demo.train_only`): LISA alone. Builds the tiny model,
  trains it with ``axolotl train`` and the LISA config, and prints which layers each interval
  trained and how much optimizer state was held. About a minute.
* ``lisa-demo-compare OUTDIR`` (:mod:`lisa_demo.end_to_end`): the whole product. Fine-tunes a base
  model with LISA, LoRA and full fine-tuning through ``axolotl train``, then evaluates all of them
  and the base model with ``eval_harness compare`` and writes the leaderboard.

Older names stay as aliases: ``lisa-demo`` and ``python -m eval_harness demo`` for the second,
``lisa-plugin demo`` for the first.
"""
