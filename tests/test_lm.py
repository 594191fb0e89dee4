import math

import pytest
import torch

from repro.lm import perplexity_of_ids


class ToyLM(torch.nn.Module):
    """Predicts from a fixed table of next-token logits (a bigram model), for hand-checkable NLLs."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, ids):
        return type("Out", (), {"logits": self.table[ids]})()


def test_perplexity_equals_exp_of_mean_token_nll_by_hand():
    table = [[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]]
    ids = torch.tensor([0, 1, 2, 2, 0, 1, 1])
    logp = torch.log_softmax(torch.tensor(table), -1)
    # windows of 4 tokens: [0,1,2,2] then [0,1,1]; each window predicts its own tokens 2..T
    pairs = [(0, 1), (1, 2), (2, 2), (0, 1), (1, 1)]
    expected = math.exp(-sum(float(logp[a, b]) for a, b in pairs) / len(pairs))
    assert perplexity_of_ids(ToyLM(table), ids, window=4) == pytest.approx(expected, rel=1e-6)


def test_uniform_model_has_perplexity_equal_to_vocabulary_size():
    ids = torch.randint(0, 7, (50,))
    assert perplexity_of_ids(ToyLM(torch.zeros(7, 7)), ids, window=16) == pytest.approx(7.0, rel=1e-6)


def test_bad_inputs_are_rejected():
    model = ToyLM(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="1-D"):
        perplexity_of_ids(model, torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="at least 2"):
        perplexity_of_ids(model, torch.zeros(5, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="shorter than two tokens"):
        perplexity_of_ids(model, torch.zeros(1, dtype=torch.long), 4)
