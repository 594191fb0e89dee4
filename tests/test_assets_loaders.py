"""The bundled models and datasets load and behave like the real thing (needs the fetched cache)."""

import numpy as np
import pytest
import torch

from repro import assets, lm

pytestmark = pytest.mark.slow


def needs(name):
    if assets.status(assets.get_asset(name)) != "ready":
        pytest.fail(f"asset {name} is not fetched: run `python -m repro assets fetch {name}` (make test does)")


PARAGRAPH = ("The river rises in the hills north of the town and flows south through farmland before it "
             "reaches the sea. In the nineteenth century it powered several mills, and a canal was built "
             "beside it to carry coal to the harbour. Today the old towpath is a popular walking route, "
             "and the mills have been turned into houses and a small museum about local industry.")


@pytest.fixture(scope="module")
def smollm2():
    needs("smollm2-135m-instruct")
    return assets.load_causal_lm("smollm2-135m-instruct")


def test_smollm2_is_a_llama_model(smollm2):
    model, _ = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576


def test_smollm2_finds_english_far_more_predictable_than_shuffled_words(smollm2):
    model, tokenizer = smollm2
    words = PARAGRAPH.split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words)))
    ppl = lm.perplexity(model, tokenizer, PARAGRAPH)
    ppl_shuffled = lm.perplexity(model, tokenizer, shuffled)
    assert ppl < 60
    assert ppl_shuffled > 5 * ppl


def test_minilm_scores_a_paraphrase_above_an_unrelated_sentence():
    needs("minilm-l6")
    encoder = assets.load_text_encoder("minilm-l6")
    emb = encoder.encode(["A man is playing a guitar.", "Someone plays the guitar.",
                          "The stock market fell sharply today."], normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > 0.5 > emb[0] @ emb[2]


def test_mobilenet_recognises_the_cat_photo():
    needs("mobilenet-v2")
    import skimage.data

    from repro.mobilenet import preprocess

    model, labels = assets.load_image_encoder("mobilenet-v2")
    assert len(labels) == 1000
    with torch.no_grad():
        top = model(preprocess(skimage.data.chelsea())[None]).softmax(-1).topk(3).indices[0]
    assert any("cat" in labels[i] for i in top)


def test_bigbench_multiple_choice_task_loads_as_dataset():
    needs("bigbench")
    ds = assets.load_bigbench_task("causal_judgment")
    assert len(ds) == 190 and set(ds.column_names) == {"input", "choices", "answer", "targets"}
    assert all(0 <= row["answer"] < len(row["choices"]) for row in ds)


def test_bigbench_task_outside_the_bundled_set_is_rejected():
    needs("bigbench")
    with pytest.raises(ValueError, match="not in the bundled set"):
        assets.load_bigbench_task("multiemo")


def test_squad_shifts_wikipedia_paragraphs():
    needs("bigbench")
    ds = assets.load_squad_shifts("new_wiki_v1.0")
    assert len(ds) == 1581 and len(ds[0]["questions"]) == len(ds[0]["answers"])
    with pytest.raises(ValueError, match="choose one of"):
        assets.load_squad_shifts("wikitext")


def test_mni152_tissue_maps_are_probabilities_on_one_grid():
    needs("mni152")
    images = assets.load_mni152()
    shapes = {k: v.shape for k, v in images.items()}
    assert set(shapes.values()) == {(197, 233, 189)}
    mask = np.asarray(images["mask"].dataobj) > 0
    maps = {k: np.asarray(images[k].dataobj, dtype=np.float32) for k in ("gm", "wm", "csf")}
    for key, data in maps.items():
        assert data.min() >= 0 and data.max() <= 1, key
    # the three tissues share out the brain: their sum is at most one and, on average, close to it
    total = maps["gm"] + maps["wm"] + maps["csf"]
    assert total.max() <= 1 + 1e-5 and total[mask].mean() > 0.95
    # CSF is a real compartment (the ventricles and sulci), not rounding residue: a tenth of the brain or more
    assert 0.1 < maps["csf"][mask].mean() < 0.5


def test_model_loader_rejects_a_name_that_is_nothing():
    with pytest.raises(FileNotFoundError, match="neither a bundled asset"):
        assets.load_causal_lm("no-such-model")


def test_bbh_cot_prompts_hold_three_worked_exemplars_per_task():
    needs("bbh-cot-prompts")
    record = assets.load_bbh_cot_prompts("web_of_lies")
    assert record["task"] == "web_of_lies" and len(record["samples"]) == 3
    assert all("So the answer is" in s["target"] for s in record["samples"])
    with pytest.raises(ValueError, match="no BBH chain-of-thought prompts"):
        assets.load_bbh_cot_prompts("web_of_truth")


def test_bbq_lite_records_say_which_groups_are_stereotyped():
    needs("bigbench")
    records = assets.load_bbq_lite("SES")
    assert len(records) == 1984 and {r["context_condition"] for r in records} == {"ambig", "disambig"}
    assert all(r["additional_metadata"]["stereotyped_groups"] for r in records)
    with pytest.raises(ValueError, match="unknown BBQ category"):
        assets.load_bbq_lite("Height")
