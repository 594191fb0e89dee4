"""GPU check of chapter 1's CUDA path (not a test; needs a CUDA GPU): prune a random LLaMA-shaped model
with E-Sparse on the GPU, serve it through SparseLinear, compare logits with the masked dense model, and
time each layer shape with ``repro.kernels.timing.decode_latency`` exactly as the chapter does.

    PYTHONPATH=lib python bench/gpu_esparse_check.py
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from repro import llm_pruning as lp
from repro.kernels import SparseLinear
from repro.kernels.timing import decode_latency
from repro.pruning import to_sparse24


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256)
    model = LlamaForCausalLM(config).cuda().eval()
    calibration = torch.randint(0, 1000, (4, 64))
    cfg = lp.PruneConfig("esparse", "2:4", entropy_bins=32)
    lp.prune_model(model, calibration, cfg)
    ids = torch.randint(0, 1000, (1, 32), device="cuda")
    with torch.no_grad():
        masked = model(ids).logits
    swapped = to_sparse24(model)
    with torch.no_grad():
        served = model(ids).logits
    err = ((served - masked).abs().max() / masked.abs().max()).item()
    print(f"swapped {swapped} linears; max |logit diff| / max |logit| = {err:.2e}")
    assert swapped == 14 and err < 2e-2, "SparseLinear on CUDA disagrees with the masked model"
    layers = {(m.out_features, m.in_features): m for m in model.modules() if isinstance(m, SparseLinear)}
    for layer in layers.values():
        for tokens in (1, 16):
            r = decode_latency(layer, tokens=tokens)
            print(f"{r['shape']:>10} M={tokens:<3} dense {r['dense_us']:7.1f} us  2:4 {r['sparse24_us']:7.1f} us  "
                  f"x{r['speedup']:.2f}")
    print("gpu_esparse_check: ok")


if __name__ == "__main__":
    main()
