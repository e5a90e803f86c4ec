"""Text we wrote ourselves, generated from templates, for tiny offline models.

Nothing here is taken from a benchmark or a public corpus: the sentences are
produced from the small vocabularies below with a seeded generator, so the same
seed always gives the same text.
"""

from __future__ import annotations

import random

NAMES = ["Ada", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kira", "Lev"]
ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stamps", "shells", "cards", "beads", "plums"]
PLACES = ["market", "library", "garden", "harbour", "station", "workshop", "school", "bakery"]
ADJECTIVES = ["quiet", "busy", "small", "old", "bright", "narrow", "green", "cold", "warm"]
VERBS = ["walks to", "looks at", "paints", "visits", "cleans", "repairs", "leaves", "finds"]
TOPICS = {
    "water": "Water boils at one hundred degrees Celsius at sea level and freezes at zero.",
    "plants": "Plants turn light, water and carbon dioxide into sugar and oxygen.",
    "moon": "The moon reflects light from the sun and takes about a month to orbit the earth.",
    "heart": "The heart pumps blood through the body, carrying oxygen to every organ.",
    "bees": "Bees carry pollen from flower to flower, which helps many crops grow fruit.",
    "rain": "Rain forms when water vapour cools in clouds and the droplets grow heavy.",
    "iron": "Iron rusts when it meets water and oxygen for a long time.",
    "sleep": "Sleep lets the body repair itself and helps the brain store memories.",
}


def sentence(rng: random.Random) -> str:
    kind = rng.randrange(4)
    name, other = rng.sample(NAMES, 2)
    if kind == 0:
        return f"{name} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {rng.choice(PLACES)}."
    if kind == 1:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        return f"{name} has {a} {rng.choice(ITEMS)} and {other} has {b}, so together they have {a + b}."
    if kind == 2:
        return rng.choice(list(TOPICS.values()))
    return f"In the {rng.choice(ADJECTIVES)} {rng.choice(PLACES)}, {name} and {other} talk about {rng.choice(list(TOPICS))}."


def paragraphs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(rng.randint(3, 7))) for _ in range(n)]


def instruction_examples(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca-format records (instruction, input, output) mixing arithmetic and facts."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        name, other = rng.sample(NAMES, 2)
        item = rng.choice(ITEMS)
        if rng.random() < 0.6:
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            records.append(
                {
                    "instruction": f"{name} has {a} {item}. {other} gives {name} {b} more. "
                    f"How many {item} does {name} have now?",
                    "input": "",
                    "output": f"{name} starts with {a} and gets {b} more, so {a} + {b} = {a + b}. "
                    f"The answer is {a + b}.",
                }
            )
        else:
            topic = rng.choice(list(TOPICS))
            records.append(
                {
                    "instruction": f"Tell me one fact about {topic}.",
                    "input": "",
                    "output": TOPICS[topic],
                }
            )
    return records
