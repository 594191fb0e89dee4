import numpy as np
import pytest
import torch

from repro.mobilenet import MobileNetV2, preprocess


def test_architecture_has_mobilenet_v2_parameter_count():
    # 3,504,872 parameters is the published size of MobileNetV2 (width 1.0, 1000 classes)
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 3_504_872


def test_output_is_one_logit_per_class():
    assert MobileNetV2().eval()(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


def test_preprocess_resizes_and_crops_to_224():
    x = preprocess(np.full((300, 450, 3), 255, dtype=np.uint8))
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        preprocess(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype float64"):
        preprocess(np.zeros((32, 32, 3)))


def test_preprocess_takes_grey_and_boolean_images_as_three_equal_channels():
    silhouette = np.zeros((300, 300), dtype=bool)
    silhouette[:, 150:] = True
    grey = silhouette.astype(np.uint8) * 255
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    expected = preprocess(rgb)
    torch.testing.assert_close(preprocess(silhouette), expected)
    torch.testing.assert_close(preprocess(grey), expected)
    # white (True) on the right: the right half of every channel normalises to (1 - mean) / std
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(expected[:, 112, -1], white)
