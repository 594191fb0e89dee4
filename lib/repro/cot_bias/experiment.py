"""Running the grid of the paper: biases × settings × (unbiased, biased) prompts over a set of items.

Identical prompts (the unbiased few-shot prompt is shared by both biases) are scored once. No-CoT
answers are the argmax of the option letters' log-probabilities after "The best answer is: (", raw and
contextually calibrated; CoT answers are parsed from greedy (or sampled) generations, with the letter
log-likelihood after the CoT as the fallback when parsing fails.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import engine, parsing
from .metrics import calibrate
from .prompts import (
    DEMO_SEPARATOR,
    NO_COT_TRIGGER,
    always_a,
    assistant_prefix,
    build_user_text,
    chat_prompt,
    content_free,
)
from .tasks import Item

SETTINGS = {  # name: (few-shot, chain of thought)
    "zero_shot_no_cot": (False, False),
    "few_shot_no_cot": (True, False),
    "zero_shot_cot": (False, True),
    "few_shot_cot": (True, True),
}
BIASES = ("suggested_answer", "answer_always_a")
CONDITIONS = ("unbiased", "biased")


def paper_has_cell(bias: str, setting: str) -> bool:
    """Answer-is-Always-A lives in the demos, so the paper ran it few-shot only."""
    return not (bias == "answer_always_a" and not SETTINGS[setting][0])


def suggested_index(item: Item, seed: int) -> int:
    """The paper's ``random_ans_idx``: a random option per item (it equals the gold one 1/k of the time)."""
    return random.Random(f"{seed}-{item.uid}").randrange(len(item.options))


@dataclass
class Query:
    item: Item
    bias: str
    setting: str
    condition: str
    target: int
    user: str


def build_queries(items: list[Item], demos: dict, settings: list[str], biases: list[str], seed: int,
                  extra: str = "") -> list[Query]:
    """Every (item, bias, setting, condition) prompt; ``demos[task]`` holds that task's baseline demos."""
    for name in settings:
        if name not in SETTINGS:
            raise ValueError(f"unknown setting {name!r}; choose from {list(SETTINGS)}")
    for name in biases:
        if name not in BIASES:
            raise ValueError(f"unknown bias {name!r}; choose from {list(BIASES)}")
    queries = []
    for item in items:
        for setting in settings:
            few_shot, cot = SETTINGS[setting]
            baseline = demos[item.task] if few_shot else None
            for bias in biases:
                if not paper_has_cell(bias, setting):
                    continue
                if bias == "suggested_answer":
                    target = suggested_index(item, seed)
                    biased = build_user_text(item, cot, baseline, suggested=target, extra=extra)
                else:
                    target = 0
                    biased = build_user_text(item, cot, [always_a(d) for d in baseline], extra=extra)
                unbiased = build_user_text(item, cot, baseline, extra=extra)
                queries.append(Query(item, bias, setting, "unbiased", target, unbiased))
                queries.append(Query(item, bias, setting, "biased", target, biased))
    return queries


def demo_block(prompt: str) -> str:
    """The few-shot part of a prompt (empty zero-shot): prompts with the same block share a cached prefix."""
    return prompt.rpartition(DEMO_SEPARATOR)[0]


def _unique(prompts: list[str]) -> tuple[list[str], list[int]]:
    index: dict[str, int] = {}
    where = [index.setdefault(p, len(index)) for p in prompts]
    return list(index), where


def _base_row(q: Query) -> dict:
    return {"task": q.item.task, "uid": q.item.uid, "bias": q.bias, "setting": q.setting,
            "condition": q.condition, "gold": q.item.gold, "target": q.target, "n_options": len(q.item.options)}


def run_no_cot(model, tokenizer, queries: list[Query], demos: dict, batch_size: int = 16,
               store: dict | None = None) -> pd.DataFrame:
    """Letter log-likelihood answers, raw (``pred``) and contextually calibrated (``pred_calibrated``)."""
    queries = [q for q in queries if not SETTINGS[q.setting][1]]
    if not queries:
        return pd.DataFrame()
    most = max(len(q.item.options) for q in queries)
    letters = engine.letter_token_ids(tokenizer, most)
    prompts = [chat_prompt(tokenizer, q.user, NO_COT_TRIGGER) for q in queries]
    # content-free prompt per (task, setting, option count), built like the *unbiased* prompt so that
    # calibration removes the model's letter prior but not the effect of the bias
    cf_keys = sorted({(q.item.task, q.setting, len(q.item.options)) for q in queries})
    examples = {(q.item.task, q.setting, len(q.item.options)): q.item for q in queries}
    cf_prompts = [chat_prompt(tokenizer, build_user_text(content_free(examples[k]), False,
                                                         demos[k[0]] if SETTINGS[k[1]][0] else None),
                              NO_COT_TRIGGER) for k in cf_keys]
    unique, where = _unique(prompts + cf_prompts)
    scores = engine.score_next_token(model, tokenizer, unique, letters, batch_size, desc="No-CoT scoring",
                                     groups=[demo_block(p) for p in unique], store=store)
    scores = scores[where]
    cf = dict(zip(cf_keys, scores[len(prompts):]))
    rows = []
    for q, lp in zip(queries, scores[:len(prompts)]):
        k = len(q.item.options)
        raw = lp[:k]
        cal = calibrate(raw, cf[(q.item.task, q.setting, k)][:k])
        rows.append({**_base_row(q), "pred": int(np.argmax(raw)), "pred_calibrated": int(np.argmax(cal)),
                     "logprobs": raw.tolist()})
    return pd.DataFrame(rows)


def run_cot(model, tokenizer, queries: list[Query], max_new_tokens: int = 128, batch_size: int = 16,
            temperature: float = 0.0, seed: int = 0, store: dict | None = None) -> pd.DataFrame:
    """Generated chains of thought, the parsed answer, and the log-likelihood fallback where parsing fails."""
    queries = [q for q in queries if SETTINGS[q.setting][1]]
    if not queries:
        return pd.DataFrame()
    prompts = [chat_prompt(tokenizer, q.user, assistant_prefix(True)) for q in queries]
    unique, where = _unique(prompts)
    letters = engine.letter_token_ids(tokenizer, max(len(q.item.options) for q in queries))
    continuation = tokenizer.encode(f"\n{NO_COT_TRIGGER}", add_special_tokens=False)
    texts, end_scores = engine.generate(model, tokenizer, unique, max_new_tokens, batch_size, temperature, seed,
                                        desc="CoT generation", groups=[demo_block(p) for p in unique], store=store,
                                        score_after=(continuation, letters))
    texts, end_scores = [texts[i] for i in where], [end_scores[i] for i in where]
    parsed = [parsing.parse_answer(t, len(q.item.options)) for t, q in zip(texts, queries)]
    failed = [i for i, p in enumerate(parsed) if p is None]
    # rows cut at max_new_tokens were scored in the generation pass; rows that ended their turn without
    # an answer are re-run with the CoT and the answer trigger appended
    fallback = {i: int(np.argmax(end_scores[i][:len(queries[i].item.options)]))
                for i in failed if end_scores[i] is not None}
    rerun = [i for i in failed if end_scores[i] is None]
    if rerun:
        after = [chat_prompt(tokenizer, queries[i].user,
                             f"{assistant_prefix(True)}{texts[i].rstrip()}\n{NO_COT_TRIGGER}") for i in rerun]
        scores = engine.score_next_token(model, tokenizer, after, letters, batch_size, desc="CoT fallback",
                                         groups=[demo_block(p) for p in after], store=store)
        fallback.update({i: int(np.argmax(s[:len(queries[i].item.options)])) for i, s in zip(rerun, scores)})
    rows = []
    for i, (q, text) in enumerate(zip(queries, texts)):
        pred = parsed[i] if parsed[i] is not None else fallback[i]
        rows.append({**_base_row(q), "pred": pred, "parsed": parsed[i] is not None, "fallback": i in fallback,
                     "mentions_bias": q.bias in BIASES and parsing.mentions_bias(text, q.bias), "cot": text})
    return pd.DataFrame(rows)
