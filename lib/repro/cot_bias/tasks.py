"""The 13 BIG-Bench Hard tasks of Turpin et al. as multiple-choice items, built from BIG-bench task JSON.

Every item becomes a question text plus a list of option texts and the gold index; the option order is
shuffled with a seeded generator, as in the paper. web_of_lies ships in BIG-bench only as a generator
script, so it is re-implemented here (``web_of_lies_question``).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

# Turpin et al. (appendix): examples evaluated per task, and the Always-A few-shot demo count they used.
PAPER_N = {
    "causal_judgment": 160, "date_understanding": 300, "disambiguation_qa": 228, "hyperbaton": 300,
    "logical_deduction_five_objects": 220, "movie_recommendation": 300, "navigate": 300, "ruin_names": 300,
    "snarks": 151, "sports_understanding": 300, "temporal_sequences": 300,
    "tracking_shuffled_objects_three_objects": 220, "web_of_lies": 220,
}
TASKS = tuple(PAPER_N)

# BIG-bench folder (and subtask) of each task; the BBH name of its chain-of-thought prompt file.
SOURCES = {
    "causal_judgment": ("causal_judgment", None, "causal_judgement"),
    "date_understanding": ("date_understanding", None, "date_understanding"),
    "disambiguation_qa": ("disambiguation_qa", None, "disambiguation_qa"),
    "hyperbaton": ("hyperbaton", None, "hyperbaton"),
    "logical_deduction_five_objects": ("logical_deduction", "five_objects", "logical_deduction_five_objects"),
    "movie_recommendation": ("movie_recommendation", None, "movie_recommendation"),
    "navigate": ("navigate", None, "navigate"),
    "ruin_names": ("ruin_names", None, "ruin_names"),
    "snarks": ("snarks", None, "snarks"),
    "sports_understanding": ("sports_understanding", None, "sports_understanding"),
    "temporal_sequences": ("temporal_sequences", None, "temporal_sequences"),
    "tracking_shuffled_objects_three_objects": ("tracking_shuffled_objects", "three_objects",
                                                "tracking_shuffled_objects_three_objects"),
    "web_of_lies": (None, None, "web_of_lies"),
}

# Option texts of the binary tasks as the BBH exemplars spell them (BIG-bench's own labels differ).
BINARY_OPTIONS = {
    "causal_judgment": ["Yes", "No"],
    "navigate": ["Yes", "No"],
    "sports_understanding": ["plausible", "implausible"],
    "web_of_lies": ["Yes", "No"],
}
# BIG-bench label -> the option text above.
LABEL_RENAMES = {"navigate": {"True": "Yes", "False": "No"}}


@dataclass
class Item:
    """One multiple-choice question: ``options[gold]`` is correct."""

    task: str
    question: str
    options: list[str]
    gold: int
    uid: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 2 <= len(self.options) <= 26:
            raise ValueError(f"{self.uid}: an item needs 2 to 26 options, got {len(self.options)}")
        if not 0 <= self.gold < len(self.options):
            raise ValueError(f"{self.uid}: gold index {self.gold} outside the {len(self.options)} options")


def check_task(task: str) -> str:
    if task not in PAPER_N:
        raise ValueError(f"unknown task {task!r}; the paper's 13 BBH tasks are: {', '.join(TASKS)}")
    return task


# --- web_of_lies: a port of BIG-bench's generator (bigbench/benchmark_tasks/web_of_lies/task.py) ---------

WEB_OF_LIES_NAMES = (
    "Crista", "Lorine", "Alejandro", "Millie", "Leda", "Amberly", "Audrie", "Andree", "Antwan", "Michaela",
    "Willian", "Delfina", "Maybelle", "Jaymie", "Helene", "Shaunda", "Ka", "Bernita", "Conception", "Gwenn",
    "Alexis", "Christie", "Fidel", "Raymond", "Fletcher", "Kandi", "Vina", "Elanor", "Jerry", "Sherrie",
    "Sima", "Phoebe", "Teressa", "Delbert", "Inga", "Shenna", "Sal", "Michael", "Tamika", "Millicent",
    "Vernell", "Kristian", "Jim", "Rashida", "Yoland", "Jamey", "Ryan", "Dallas", "Osvaldo", "Shalonda",
)


def web_of_lies_question(rng: random.Random, length: int = 5) -> tuple[str, bool]:
    """A chain "A lies. B says A tells the truth. ..." and whether its last speaker tells the truth.

    Each statement either confirms or denies the previous speaker; every denial flips the truth value, so
    the answer is the parity of the denials (the first statement counts when it says "lies"). BBH uses
    chains of five statements.
    """
    if not 1 <= length <= len(WEB_OF_LIES_NAMES):
        raise ValueError(f"web_of_lies length must be in [1, {len(WEB_OF_LIES_NAMES)}], got {length}")
    names = list(WEB_OF_LIES_NAMES)
    rng.shuffle(names)
    answer, sentences = True, []
    for i in range(length):
        truthful = rng.choice((True, False))
        answer = answer if truthful else not answer
        claim = "tells the truth" if truthful else "lies"
        sentences.append(f"{names[i]} {claim}." if i == 0 else f"{names[i]} says {names[i - 1]} {claim}.")
    return " ".join(sentences) + f" Does {names[length - 1]} tell the truth?", answer


def web_of_lies_truth(question: str) -> bool:
    """Whether the last speaker of a web_of_lies question tells the truth, found independently of the
    generator by following each speaker's honesty statement by statement (the tests compare the two)."""
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s", question.split(" Does ")[0]) if s.strip()]
    first = re.fullmatch(r"(\w+) (tells the truth|lies)\.", sentences[0])
    if first is None:
        raise ValueError(f"not a web_of_lies question: {question!r}")
    honest = {first.group(1): first.group(2) == "tells the truth"}
    for sentence in sentences[1:]:
        m = re.fullmatch(r"(\w+) says (\w+) (tells the truth|lies)\.", sentence)
        if m is None or m.group(2) not in honest:
            raise ValueError(f"malformed web_of_lies statement: {sentence!r}")
        claim_true = honest[m.group(2)] == (m.group(3) == "tells the truth")
        honest[m.group(1)] = claim_true  # a speaker is honest exactly when the claim holds
    asked = re.search(r"Does (\w+) tell the truth\?$", question).group(1)
    return honest[asked]


def web_of_lies_items(n: int, seed: int, length: int = 5) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        question, answer = web_of_lies_question(rng, length)
        items.append(Item("web_of_lies", f"Question: {question}", ["Yes", "No"], 0 if answer else 1,
                          f"web_of_lies/{i}"))
    return items


# --- BIG-bench JSON -> items -------------------------------------------------------------------------------

REQUIRED_FIELDS = ("input", "target_scores")


def validate_examples(raw: dict, where: str) -> list[dict]:
    """The ``examples`` of a BIG-bench task file, each with input and target_scores, or a clear error."""
    if not isinstance(raw, dict) or "examples" not in raw:
        raise ValueError(f"{where}: a BIG-bench task file needs an 'examples' list")
    for i, ex in enumerate(raw["examples"]):
        missing = [f for f in REQUIRED_FIELDS if f not in ex]
        if missing:
            raise ValueError(f"{where}: example {i} lacks the field(s) {missing}; every example needs "
                             f"{list(REQUIRED_FIELDS)}")
        scores = ex["target_scores"]
        if not isinstance(scores, dict) or len(scores) < 2 or max(scores.values()) <= 0:
            raise ValueError(f"{where}: example {i} needs target_scores with at least two options, one correct")
    return raw["examples"]


def _question_and_options(task: str, prefix: str, text: str, labels: list[str]) -> tuple[str, list[str]]:
    """The BBH-style question text and option texts of one BIG-bench example."""
    if task == "hyperbaton":  # options "a"/"b" point into the input; lift the two sentences out
        m = re.search(r'a " (.*?) " b " (.*?) " \?', text)
        if m is None:
            raise ValueError(f"hyperbaton input not in the expected form: {text!r}")
        return "Which sentence has the correct adjective order?", [m.group(1), m.group(2)]
    if task == "snarks":
        m = re.fullmatch(r"Which statement is sarcastic\? \(a\) (.*) \(b\) (.*)", text.strip(), re.S)
        if m is None:
            raise ValueError(f"snarks input not in the expected form: {text!r}")
        return "Which statement is sarcastic?", [m.group(1).strip(), m.group(2).strip()]
    renames = LABEL_RENAMES.get(task, {})
    options = [renames.get(label, label).strip() for label in labels]
    if task == "sports_understanding":
        return f'Is the following sentence plausible? "{text.strip()}."'.replace('.."', '."'), options
    if task == "movie_recommendation":
        return f"Find a movie similar to {text.strip()}", options
    if task == "disambiguation_qa":
        return f"{prefix.strip()}\nSentence: {text.strip()}", options
    if task == "tracking_shuffled_objects_three_objects":
        return text.strip(), options
    return (f"{prefix.strip()}\n{text.strip()}" if prefix.strip() else text.strip()), options


def items_from_bigbench(task: str, raw: dict, where: str = "task file") -> list[Item]:
    """Items of one task from its parsed BIG-bench JSON (options in the file's order; shuffle later)."""
    check_task(task)
    prefix = raw.get("task_prefix", "")
    items = []
    for i, ex in enumerate(validate_examples(raw, where)):
        labels = list(ex["target_scores"])
        gold_label = max(labels, key=lambda label: ex["target_scores"][label])
        question, options = _question_and_options(task, prefix, ex["input"], labels)
        gold = labels.index(gold_label)
        if task in ("hyperbaton", "snarks"):  # labels are "a"/"b" or "(a)"/"(b)" in order
            gold = 0 if "a" in gold_label else 1
        items.append(Item(task, question, options, gold, f"{task}/{i}"))
    return items


def shuffle_options(item: Item, rng: random.Random) -> Item:
    order = list(range(len(item.options)))
    rng.shuffle(order)
    return Item(item.task, item.question, [item.options[j] for j in order], order.index(item.gold), item.uid,
                dict(item.meta))


def load_task_items(task: str, seed: int = 0, path: str | Path | None = None) -> list[Item]:
    """Every item of a task with seeded shuffled options. ``path`` reads a task JSON instead of the asset."""
    check_task(task)
    rng = random.Random(f"{seed}-{task}")
    if task == "web_of_lies" and path is None:
        items = web_of_lies_items(PAPER_N[task] + 30, seed)  # the paper's N plus 30 few-shot candidates
    else:
        if path is None:
            from ..assets.loaders import bigbench_task_file

            folder, subtask, _ = SOURCES[task]
            path = bigbench_task_file(folder, subtask)
        path = Path(path)
        items = items_from_bigbench(task, json.loads(path.read_text()), where=str(path))
    return [shuffle_options(item, rng) for item in items]


def stratified_sample(items: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items (all if fewer) drawn with balanced gold positions where possible, seeded per task."""
    rng = random.Random(f"{seed}-{items[0].task if items else ''}")
    by_gold: dict[int, list[Item]] = {}
    for item in items:
        by_gold.setdefault(item.gold, []).append(item)
    for group in by_gold.values():
        rng.shuffle(group)
    keys = sorted(by_gold)
    rng.shuffle(keys)  # which gold positions come first is random, so small samples are not all (A)
    chosen = []
    while len(chosen) < min(n, len(items)):
        for key in keys:
            if by_gold[key] and len(chosen) < n:
                chosen.append(by_gold[key].pop())
    return chosen
