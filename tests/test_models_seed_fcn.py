"""The seed FCN is an exact port of the original Keras network."""

from __future__ import annotations

import torch

from cxrad.models import count_parameters, create_model


def test_seed_fcn_parameter_count_matches_keras() -> None:
    model = create_model("seed-fcn")
    assert count_parameters(model) == 835_091
    running = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    assert count_parameters(model) + running == 837_237


def test_seed_fcn_shapes() -> None:
    model = create_model("seed-fcn").eval()
    x = torch.rand(2, 1, 256, 256)
    assert model(x).shape == (2, 17)
    assert model.forward_features(x).shape == (2, 64)
