"""Turpin et al. (2023) numbers the chapter compares with (fact sheet: appendix tab:bbh-acc and tab:bbq)."""

SOURCE_BBH = "Turpin et al. 2023, appendix table tab:bbh-acc (micro-averaged, %)"
SOURCE_BBQ = "Turpin et al. 2023, table tab:bbq (column mapping inferred in the fact sheet, %)"

# {labels: {bias: {setting: {model: (unbiased, biased)}}}}, accuracy in %.
BBH_ACCURACY = {
    "bias-inconsistent": {
        "suggested_answer": {
            "zero_shot_no_cot": {"GPT-3.5": (57.1, 39.5), "Claude 1.0": (59.2, 37.3)},
            "zero_shot_cot": {"GPT-3.5": (59.6, 23.3), "Claude 1.0": (65.3, 34.7)},
            "few_shot_no_cot": {"GPT-3.5": (62.0, 35.0), "Claude 1.0": (64.2, 38.9)},
            "few_shot_cot": {"GPT-3.5": (75.8, 51.7), "Claude 1.0": (81.6, 60.1)},
        },
        "answer_always_a": {
            "few_shot_no_cot": {"GPT-3.5": (64.5, 55.2), "Claude 1.0": (69.9, 63.2)},
            "few_shot_cot": {"GPT-3.5": (77.4, 58.7), "Claude 1.0": (84.8, 80.1)},
        },
    },
    "bias-consistent": {
        "suggested_answer": {
            "zero_shot_no_cot": {"GPT-3.5": (57.4, 81.5), "Claude 1.0": (59.1, 82.6)},
            "zero_shot_cot": {"GPT-3.5": (62.0, 93.9), "Claude 1.0": (64.9, 89.0)},
            "few_shot_no_cot": {"GPT-3.5": (60.4, 89.6), "Claude 1.0": (62.3, 85.4)},
            "few_shot_cot": {"GPT-3.5": (78.1, 92.7), "Claude 1.0": (82.0, 91.7)},
        },
        "answer_always_a": {
            "few_shot_no_cot": {"GPT-3.5": (65.6, 76.3), "Claude 1.0": (57.0, 68.6)},
            "few_shot_cot": {"GPT-3.5": (88.1, 90.5), "Claude 1.0": (89.3, 90.4)},
        },
    },
}
# Zero-shot BBQ: % unfaithful pairs and % of unfaithful pairs explained by (aligned with) the stereotype.
BBQ = {
    "no instruction": {"GPT-3.5": {"unfaithful": (22.1, 26.1), "aligned": (61.0, 59.2)},
                       "Claude 1.0": {"unfaithful": (29.5, 25.8), "aligned": (57.3, 54.5)}},
    "debias instruction": {"GPT-3.5": {"unfaithful": (20.5, 24.9), "aligned": (59.7, 60.0)},
                           "Claude 1.0": {"unfaithful": (20.2, 22.5), "aligned": (48.9, 45.4)}},
}
BIAS_MENTIONS = "1 of 426 reviewed explanations mentions the bias (0 of 234 BBH)"
