"""Loaders that turn cached assets (or a local path, or a hub id when online) into ready objects.

Every loader accepts a bundled asset name; the model loaders also accept a local directory or, when the
machine is online, a hub id, so the full profile can run paper-scale checkpoints through the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

from .store import get_asset, load_manifest, require


def resolve_model_source(name_or_path: str | Path) -> str:
    """A bundled asset's cache folder, a local folder, or the string unchanged (a hub id)."""
    key = str(name_or_path)
    if key in load_manifest():
        get_asset(key)
        return str(require(key))
    path = Path(key).expanduser()
    if path.exists():
        return str(path)
    if "/" not in key:
        raise FileNotFoundError(
            f"{key!r} is neither a bundled asset ({', '.join(sorted(load_manifest()))}), "
            f"nor an existing local folder, nor a hub id of the form 'org/name'")
    return key


def load_causal_lm(name_or_path: str | Path = "smollm2-135m-instruct", dtype=None, device: str = "cpu"):
    """(model, tokenizer) of a causal LM in eval mode; fp32 on CPU unless ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32)
    return model.to(device).eval(), tokenizer


def load_text_encoder(name_or_path: str | Path = "minilm-l6", device: str = "cpu"):
    """A sentence-transformers encoder (``.encode(list_of_str)`` gives embeddings)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_source(name_or_path), device=device)


def load_image_encoder(name: str = "mobilenet-v2"):
    """(MobileNetV2 in eval mode with ImageNet weights, list of the 1000 class names)."""
    import torch

    from ..mobilenet import MobileNetV2

    folder = require(name)
    model = MobileNetV2()
    state = torch.load(folder / "mobilenet_v2-b0353104.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    labels = json.loads((folder / "imagenet_classes.json").read_text())
    return model.eval(), labels


def bigbench_task_file(task: str, subtask: str | None = None) -> Path:
    root = require("bigbench")
    allowed = get_asset("bigbench").options["tasks"]
    if task not in allowed:
        raise ValueError(f"BIG-bench task {task!r} is not in the bundled set; available: {', '.join(allowed)}")
    folder = root / task if subtask is None else root / task / subtask
    path = folder / "task.json"
    if not path.is_file():
        subtasks = sorted(p.parent.name for p in (root / task).glob("*/task.json"))
        raise FileNotFoundError(
            f"no task.json for {task}{'/' + subtask if subtask else ''}; subtasks: {', '.join(subtasks)}")
    return path


def bigbench_subtasks(task: str) -> list[str]:
    root = require("bigbench") / task
    return sorted(p.parent.name for p in root.glob("*/task.json"))


def load_bigbench_task(task: str, subtask: str | None = None):
    """A BIG-bench task as a ``datasets.Dataset`` with columns input, choices, answer, targets.

    ``choices``/``answer`` come from ``target_scores`` (answer = index of the highest score; -1 for
    generative tasks); ``targets`` holds the string target(s), empty for multiple-choice tasks.
    """
    import datasets

    raw = json.loads(bigbench_task_file(task, subtask).read_text())
    rows = []
    for ex in raw["examples"]:
        scores = ex.get("target_scores") or {}
        choices = list(scores)
        answer = max(range(len(choices)), key=lambda i: scores[choices[i]]) if choices else -1
        target = ex.get("target", [])
        targets = [target] if isinstance(target, str) else list(target)
        rows.append({"input": ex["input"], "choices": choices, "answer": answer,
                     "targets": [str(t) for t in targets]})
    info = datasets.DatasetInfo(description=raw.get("description", ""),
                                citation="BIG-bench (Srivastava et al., 2023)")
    return datasets.Dataset.from_list(rows, info=info)


def load_bbh_cot_prompts(task: str) -> dict:
    """The official BIG-Bench Hard chain-of-thought exemplars of one task (lm-eval's copy).

    Returns ``{"task", "description", "samples": [{"input", "target"}, ...]}``; ``target`` is the worked
    explanation ending in "So the answer is ...". BBH spells one task ``causal_judgement``.
    """
    folder = require("bbh-cot-prompts")
    path = folder / f"{task}.json"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.json"))
        raise ValueError(f"no BBH chain-of-thought prompts for task {task!r}; available: {', '.join(available)}")
    return json.loads(path.read_text())


BBQ_CATEGORIES = ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
                  "Race_ethnicity", "Religion", "SES", "Sexual_orientation")


def load_bbq_lite(category: str) -> list[dict]:
    """BBQ-lite examples of one category in the original BBQ record format (BIG-bench ``bbq_lite`` resources).

    Unlike ``bbq_lite_json``, these records keep ``answer_info`` (each answer's social group) and
    ``additional_metadata.stereotyped_groups``, which tell which answer is the stereotyped one.
    """
    if category not in BBQ_CATEGORIES:
        raise ValueError(f"unknown BBQ category {category!r}; choose one of {', '.join(BBQ_CATEGORIES)}")
    path = require("bigbench") / "bbq_lite" / "resources" / f"{category}.json"
    return json.loads(path.read_text())["examples"]


def load_mni152() -> dict:
    """The MNI152 T1 template and tissue maps as nibabel images: t1, gm, wm, csf, mask.

    gm, wm and csf are probabilities in [0, 1] (float32). nilearn ships the grey- and white-matter maps as
    0-255 bytes, so they are rescaled here. CSF is not shipped; it is the part of the brain mask not
    explained by grey or white matter.
    """
    import nibabel as nib
    import numpy as np

    folder = require("mni152")
    images = {"t1": nib.load(folder / "t1.nii.gz"), "mask": nib.load(folder / "brain_mask.nii.gz")}
    probabilities = {}
    for key in ("gm", "wm"):
        stored = nib.load(folder / f"{key}.nii.gz")
        data = np.asarray(stored.dataobj, dtype=np.float32)
        probabilities[key] = data / 255.0 if data.max() > 1.0 else data
        images[key] = nib.Nifti1Image(probabilities[key], stored.affine)
    gm, wm = probabilities["gm"], probabilities["wm"]
    mask = np.asarray(images["mask"].dataobj) > 0
    csf = np.where(mask, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    images["csf"] = nib.Nifti1Image(csf, images["t1"].affine)
    return images


SQUAD_SHIFTS_SPLITS = ("squaddev_v1.1", "new_wiki_v1.0", "nyt_v1.0", "reddit_v1.0", "amazon_reviews_v1.0")


def load_squad_shifts(split: str = "new_wiki_v1.0"):
    """Paragraphs and questions of one SQuAD / SQuADShifts split (SQuAD JSON, shipped in BIG-bench).

    Returns a ``datasets.Dataset`` with one row per paragraph: title, paragraph index, context and its
    questions with their answer texts. Wikipedia splits: squaddev_v1.1, new_wiki_v1.0.
    """
    import datasets

    if split not in SQUAD_SHIFTS_SPLITS:
        raise ValueError(f"unknown SQuADShifts split {split!r}; choose one of {', '.join(SQUAD_SHIFTS_SPLITS)}")
    raw = json.loads((require("bigbench") / "squad_shifts" / f"{split}.json").read_text())
    rows = []
    for article in raw["data"]:
        for i, para in enumerate(article["paragraphs"]):
            rows.append({
                "title": article["title"],
                "paragraph": i,
                "context": para["context"].strip(),
                "questions": [qa["question"] for qa in para["qas"]],
                "answers": [[a["text"] for a in qa["answers"]] for qa in para["qas"]],
            })
    return datasets.Dataset.from_list(rows)
