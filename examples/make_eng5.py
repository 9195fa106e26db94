"""Writes the ENG5-style example set: a prompt, a rubric, 30 student essays and 12 anchors.

The texts are written for this project: sentences from the banks below, in our own words, put
together at nine levels of quality (the grades of `eng5_np_legacy_9_step`). Higher levels write
longer (350-650 words), use richer vocabulary and linking words, and vary their sentences; lower
levels repeat themselves and stay plain. Deterministic: run it again and the same files appear.
Run: .venv/bin/python examples/make_eng5.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

GRADES = ["F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]
ROOT = Path(__file__).resolve().parent / "eng5"

PROMPT = """# A place that matters to me

Write an essay (about 350 to 650 words) about a place that matters to you. Describe the place so
that a reader can see, hear and feel it, explain why it matters to you, and reflect on how your
feelings about it have changed or might change.
"""

RUBRIC = """Judge the essays as a whole. Reward vivid, precise description; a clear line of thought
from paragraph to paragraph; reflection that goes beyond the obvious; and varied, accurate
language. Do not reward length for its own sake.
"""

PLACES = ["the lake behind my grandmother's house", "the old library in our town", "the football pitch near school",
          "my uncle's fishing boat", "the bus stop on Mill Road", "the allotment my father rents",
          "the roof of our apartment block", "the forest path to the cabin", "the kitchen in our first flat",
          "the harbour wall", "the skate park by the station", "the small bakery on the corner"]  # fmt: skip

PLAIN = [
    "I like {place} a lot.", "It is a nice place.", "I go there a lot.", "It is very good there.",
    "My friends like it too.", "I think it is the best place.", "There are many things there.",
    "It makes me happy.", "I go there on the weekend.", "It is near my house.", "We have fun there.",
    "I will go there again.", "It is not boring.", "Sometimes it is cold there.", "I like it because it is nice.",
]  # fmt: skip
SIMPLE = [
    "When I go to {place} I feel calm and happy.", "In the summer the light stays for a long time.",
    "I remember the first time I went there with my family.", "The air smells of {smell}.",
    "You can hear {sound} if you stand still.", "It is important to me because I grew up there.",
    "My brother and I used to race to the end of it.", "In winter everything looks different.",
    "I go there when I need to think about things.", "It has changed a bit since I was small.",
]  # fmt: skip
RICH = [
    "Every time I return to {place}, the first thing I notice is {sound}, steady and familiar.",
    "The smell of {smell} drifts across it, and for a moment I am seven years old again.",
    "What makes it matter is not the place itself but the people I have shared it with.",
    "In the late afternoon the light turns amber and the shadows stretch long across the ground.",
    "It was there that I first understood that silence can be a kind of company.",
    "I used to think it would always stay the same, although I now see how much it has changed.",
    "Some of my clearest memories belong to it: arguments, jokes, and one goodbye I still think about.",
    "When my grandfather fell ill, it became the place where the family gathered without planning to.",
]  # fmt: skip
REFLECTIVE = [
    "Perhaps a place matters most when it holds a version of ourselves we are not ready to leave behind.",
    "Looking back, I realise that my attachment was never simply nostalgia; it was a way of measuring how I had grown.",
    "Yet I have begun to suspect that the place will outlast my feelings for it, and that this is not a loss but a release.",
    "If it were demolished tomorrow, I would grieve, but I would also carry its particular quiet with me elsewhere.",
    "Consequently, whenever I feel unsettled, I return to it in my mind, testing new worries against old certainties.",
    "Nevertheless, honesty demands that I admit the place was not always kind: it was also where I learned to be lonely.",
]  # fmt: skip
LINKS = [
    "Moreover,",
    "However,",
    "In contrast,",
    "For instance,",
    "Above all,",
    "Even so,",
    "Meanwhile,",
    "In the end,",
]
SMELLS = ["wet pine needles", "fresh bread", "diesel and salt", "cut grass", "old paper", "rain on warm stone"]
SOUNDS = [
    "the gulls arguing",
    "a distant train",
    "water knocking against wood",
    "the hum of the road",
    "wind in the birches",
]


def essay(level: int, rng: random.Random) -> str:
    """An essay at level 0 (lowest) to 8 (highest)."""
    place = rng.choice(PLACES)
    target = 360 + level * 32 + rng.randint(-8, 8)
    banks = (
        [PLAIN] * max(0, 4 - level)
        + [SIMPLE] * (2 + (level in range(2, 7)))
        + [RICH] * level
        + [REFLECTIVE] * max(0, level - 4)
    )
    paragraphs, words, current = [], 0, []
    while words < target:
        sentence = rng.choice(rng.choice(banks)).format(place=place, smell=rng.choice(SMELLS), sound=rng.choice(SOUNDS))
        if level >= 5 and current and rng.random() < 0.25:
            sentence = f"{rng.choice(LINKS)} {sentence[0].lower()}{sentence[1:]}"
        current.append(sentence)
        words += len(sentence.split())
        if len(current) >= (3 if level < 3 else 5):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    if level < 3:  # lower levels write one long block
        paragraphs = [" ".join(paragraphs)]
    return "\n\n".join(paragraphs) + "\n"


def main() -> None:
    rng = random.Random(2026)
    (ROOT / "students").mkdir(parents=True, exist_ok=True)
    (ROOT / "anchors").mkdir(parents=True, exist_ok=True)
    (ROOT / "prompt.md").write_text(PROMPT)
    (ROOT / "rubric.md").write_text(RUBRIC)
    with (ROOT / "intended_grades.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "intended_grade"])
        for i in range(30):
            level = round(i * 8 / 29)
            name = f"student_{i + 1:02d}.txt"
            (ROOT / "students" / name).write_text(essay(level, rng))
            writer.writerow([name, GRADES[level]])
    anchor_levels = [0, 1, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8]  # 12 anchors across the grades
    with (ROOT / "anchors" / "anchors.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "grade"])
        for i, level in enumerate(anchor_levels):
            name = f"anchor_{i + 1:02d}.txt"
            (ROOT / "anchors" / name).write_text(essay(level, rng))
            writer.writerow([name, GRADES[level]])


if __name__ == "__main__":
    main()
