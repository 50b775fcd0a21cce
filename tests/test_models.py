"""Every registered model: shapes, gradients, the input contract, Grad-CAM hooks and weights I/O."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cxrad.errors import ModelError
from cxrad.models import count_parameters, create_model, get_spec, list_models
from cxrad.models.monai_nets import torchvision_densenet_names

MODELS = list_models()
# Smallest side each net takes: the seed FCN halves seven times with kernel 2.
SIZE = {"seed-fcn": 128}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine, two OpenMP threads competing with other
    jobs made DenseNet's small-input backward ~80× slower (8 s against 0.1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _x(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = SIZE.get(name, 64)
    return torch.rand(batch, 1, s, s, generator=g)


def _head(net: nn.Module) -> nn.Linear | None:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def test_registry_lists_every_model() -> None:
    expected = {"seed-fcn", "densenet121", "efficientnet-b0", "resnet18", "resnet34", "cxr-fast"}
    assert set(MODELS) == expected


@pytest.mark.parametrize("num_classes", [17, 3])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_shapes_and_finite(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes).train()
    x = _x(name)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    loss = nn.functional.binary_cross_entropy_with_logits(out, torch.ones_like(out) * 0.5)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


@pytest.mark.parametrize("name", MODELS)
def test_forward_features_feed_the_head(name: str) -> None:
    model = create_model(name, num_classes=5).eval()
    x = _x(name)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.ndim == 2 and feats.shape[0] == 2 and feats.shape[1] >= 32
    head = _head(model.net)
    if head is None:  # the seed FCN ends in a conv + global max, not a linear layer
        assert feats.shape == (2, 64)
    else:
        assert feats.shape[1] == head.in_features
        torch.testing.assert_close(out, head(feats), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_spec_contract_and_256_input(name: str) -> None:
    spec = get_spec(name)
    assert spec.input_size == 256 and spec.in_channels == 1
    assert spec.std > 0 and spec.description
    assert set(spec.contract()) >= {"input_size", "in_channels", "mean", "std", "cam_layer"}
    model = create_model(name, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 256, 256))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_cam_layer_gives_a_map_and_its_gradient(name: str) -> None:
    model = create_model(name, num_classes=3).eval()
    layer = dict(model.net.named_modules())[get_spec(name).cam_layer]
    seen: dict[str, torch.Tensor] = {}
    h1 = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("act", o.detach().clone()))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: seen.__setitem__("grad", go[0]))
    try:
        model(_x(name, batch=1))[0, 1].backward()
    finally:
        h1.remove()
        h2.remove()
    act, grad = seen["act"], seen["grad"]
    assert act.ndim == 4 and act.shape[2] >= 1 and act.shape[1] >= 16
    assert grad.shape == act.shape
    assert grad.abs().sum() > 0


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match=r"Did you mean 'densenet121'"):
        create_model("densenet")
    with pytest.raises(ModelError, match=r"resnet18"):
        get_spec("resnet")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(tmp_path: Path, suffix: str) -> None:
    src = create_model("cxr-fast", num_classes=4).eval()
    with torch.no_grad():  # make BN statistics non-trivial so they are checked too
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.net.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    fresh = create_model("cxr-fast", num_classes=4).eval()
    loaded = create_model("cxr-fast", num_classes=4, weights=str(path)).eval()
    x = _x("cxr-fast")
    with torch.no_grad():
        assert not torch.allclose(fresh(x), src(x))
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("cxr-fast", "seed-fcn")])
def test_weights_kwarg_for_monai_nets(tmp_path: Path, name: str) -> None:
    src = create_model(name, num_classes=3).eval()
    path = tmp_path / "w.safetensors"
    # A Classifier state_dict (keys prefixed "net."): the prefix is stripped on load.
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_model(name, num_classes=3, weights=str(path)).eval()
    x = _x(name, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)


def test_weights_adapt_rgb_stem_and_new_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = create_model("cxr-fast", num_classes=17).eval()
    state = dict(src.net.state_dict())
    stem = state["stem.0.0.weight"]
    state["stem.0.0.weight"] = stem.repeat(1, 3, 1, 1) / 3  # as an ImageNet RGB checkpoint
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="cxrad.models.weights"):
        loaded = create_model("cxr-fast", num_classes=2, weights=str(path)).eval()
    torch.testing.assert_close(loaded.net.stem[0][0].weight, stem)
    x = _x("cxr-fast")
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), src.forward_features(x))
    assert loaded.net.fc.weight.shape == (2, 256)
    assert "fc.weight skipped" in caplog.text and "summed from 3 input channels" in caplog.text


def test_bad_weights_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        create_model("cxr-fast", weights=str(tmp_path / "missing.safetensors"))
    other = tmp_path / "resnet.safetensors"
    save_file(create_model("resnet18").net.state_dict(), str(other))
    with pytest.raises(ModelError, match="do not fit CXRFast"):
        create_model("cxr-fast", weights=str(other))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        create_model("cxr-fast", weights=str(junk))


def test_torchvision_densenet_names_map_to_monai() -> None:
    assert (
        torchvision_densenet_names("features.denseblock2.denselayer7.norm1.weight")
        == "features.denseblock2.denselayer7.layers.norm1.weight"
    )
    assert (
        torchvision_densenet_names("features.denseblock1.denselayer1.conv.2.weight")
        == "features.denseblock1.denselayer1.layers.conv2.weight"
    )
    assert torchvision_densenet_names("classifier.bias") == "class_layers.out.bias"
    assert torchvision_densenet_names("features.conv0.weight") == "features.conv0.weight"
    net = create_model("densenet121", num_classes=3).net
    assert "features.denseblock2.denselayer7.layers.norm1.weight" in net.state_dict()


def test_cxr_fast_size_is_pinned() -> None:
    # Changing the architecture must be deliberate: the docstring's measurements refer to this.
    assert count_parameters(create_model("cxr-fast", num_classes=17)) == 2_803_329


def test_cxr_fast_exports_to_onnx(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = create_model("cxr-fast", num_classes=3).eval()
    x = torch.rand(1, 1, 256, 256)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"x": x.numpy()})[0]
    assert got.shape == (1, 3)
    assert abs(got - ref).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_model_exports_to_onnx(tmp_path: Path, name: str) -> None:
    import onnxruntime as ort

    model = create_model(name, num_classes=3).eval()
    x = _x(name, batch=1)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(x).numpy()
    assert abs(sess.run(None, {"x": x.numpy()})[0] - ref).max() < 1e-3


@pytest.mark.slow
def test_cxr_fast_cpu_latency_budget(tmp_path: Path) -> None:
    """The design goal: p50 < 25 ms eager at 256 px on 2 threads, and ONNX >= 1.5× faster.

    Run it on a quiet machine (``pytest -m slow -k latency``).
    """
    import statistics
    import time

    import onnxruntime as ort

    torch.set_num_threads(2)  # the goal is stated for 2 cores; the module fixture restores 1
    model = create_model("cxr-fast").eval()
    x = torch.rand(1, 1, 256, 256)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    xn = x.numpy()

    def p50(fn: Callable[[], object]) -> float:
        for _ in range(5):
            fn()
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e3

    # Best of two rounds each: load only slows a run. Needs a quiet machine all the same: with
    # other jobs on the 2 cores, 2 OpenMP threads made eager p50 swing from 25 to 930 ms.
    with torch.inference_mode():
        eager = min(p50(lambda: model(x)) for _ in range(2))
    onnx = min(p50(lambda: sess.run(None, {"x": xn})) for _ in range(2))
    torch.set_num_threads(1)
    assert eager < 25, f"eager p50 {eager:.1f} ms"
    assert eager / onnx >= 1.5, f"eager {eager:.1f} ms, onnx {onnx:.1f} ms"
