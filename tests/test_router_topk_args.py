"""The routing step's arguments, on the CPU: the ``cute_kernels`` ops refuse bad ones before
they look at the device (TypeError / ValueError naming the argument), and ``dispatch`` computes
the spec's result on any device (its torch tier here), eagerly and under torch.compile."""

import pytest
import torch

import cute_kernels
import dispatch
from cute_kernels import presets
from cute_kernels import reference as spec
from cute_kernels.routing import RoutingConfig

pytestmark = pytest.mark.filterwarnings("ignore:cute_kernels dispatch:RuntimeWarning")
DSV3 = presets.get("deepseek-v3").routing
BF16 = torch.bfloat16


def inputs(m=4, h=64, e=256, gen=None):
    g = gen or torch.Generator().manual_seed(0)
    return (torch.randn(m, h, generator=g).to(BF16), (torch.randn(e, h, generator=g) / 8).to(BF16),
            torch.randn(e, generator=g) * 0.1)


@pytest.mark.parametrize("kwargs,exc,name", [
    ({"routing": "deepseek"}, TypeError, "routing"),
    ({"routing": RoutingConfig("sigmoid", 8, 8, 4, correction_bias=True), "weight_rows": 250}, ValueError, "n_group"),
    ({"routing": RoutingConfig("sigmoid", 8), "correction_bias": "given"}, ValueError, "correction_bias"),
    ({"correction_bias": None}, ValueError, "correction_bias"),
    ({"correction_bias": torch.zeros(255)}, ValueError, "correction_bias"),
    ({"correction_bias": torch.zeros(256, dtype=BF16)}, TypeError, "correction_bias"),
    ({"out_weights": torch.zeros(4, 7)}, ValueError, "out_weights"),
    ({"out_ids": torch.zeros(4, 8)}, TypeError, "out_ids"),
    ({"logits_out": torch.zeros(4, 255)}, ValueError, "logits_out"),
    ({"packed": True, "out_weights": torch.zeros(4, 8)}, ValueError, "out_weights"),
    ({"routing": RoutingConfig("softmax", 30)}, None, None),
])
@pytest.mark.parametrize("layer", ["cute_kernels", "dispatch"])
def test_bad_arguments_are_named(kwargs, exc, name, layer, gen):
    x, w, cbias = inputs(gen=gen)
    kwargs = dict(kwargs)
    if "weight_rows" in kwargs:
        w = w[:kwargs.pop("weight_rows")]
        cbias = cbias[:w.shape[0]]
    routing = kwargs.pop("routing", DSV3)
    cb = kwargs.pop("correction_bias", cbias)
    if isinstance(cb, str):
        cb = cbias
    fn = cute_kernels.router_topk if layer == "cute_kernels" else dispatch.router_topk
    if layer == "cute_kernels" and name not in ("routing", "n_group"):
        # The kernel op checks the routing before the device, and (as it does a bias and the
        # outputs) the correction bias and the outputs after it: on CPU tensors, the device.
        exc, name = ValueError, "CUDA"
    if exc is None:  # valid: dispatch computes it
        fn(x, w, routing=routing, **kwargs)
        return
    with pytest.raises(exc, match=rf"\b{name}\b"):
        fn(x, w, routing=routing, correction_bias=cb, **kwargs)


def test_route_arguments():
    logits = torch.randn(3, 256)
    with pytest.raises(TypeError, match=r"\blogits\b"):
        cute_kernels.route(logits.to(BF16), routing=DSV3, correction_bias=torch.zeros(256))
    with pytest.raises(TypeError, match=r"\brouting\b"):
        cute_kernels.route(logits, routing=DSV3.to_text())
    with pytest.raises(ValueError, match="CUDA"):
        cute_kernels.route(logits, routing=DSV3, correction_bias=torch.zeros(256))


def test_norm_router_topk_arguments():
    x, w, cbias = inputs()
    q = presets.get("deepseek-v4-flash").routing
    nw = torch.ones(64, dtype=BF16)
    with pytest.raises(TypeError, match=r"\brouting\b"):
        cute_kernels.norm_router_topk(x, nw, w, routing=None)
    with pytest.raises(ValueError, match=r"\beps\b"):
        cute_kernels.norm_router_topk(x, nw, w, -1.0, routing=q, correction_bias=cbias)
    with pytest.raises(ValueError, match="CUDA"):
        cute_kernels.norm_router_topk(x, nw, w, routing=q, correction_bias=cbias)


@pytest.mark.parametrize("preset", ["deepseek-v3", "kimi-k2", "qwen3-235b-a22b", "gpt-oss-120b", "llama-4-maverick",
                                    "minimax-m2", "mixtral-8x7b"])
@pytest.mark.parametrize("m", [0, 1, 5])
def test_dispatch_matches_the_spec_on_cpu(preset, m, gen):
    p = presets.get(preset)
    e, h = p.num_experts, 64
    x = torch.randn(m, h, generator=gen).to(BF16)
    w = (torch.randn(e, h, generator=gen) / 8).to(getattr(torch, p.gate_dtype))
    bias = (torch.randn(e, generator=gen) * 0.1).to(w.dtype) if p.gate_bias else None
    cbias = torch.randn(e, generator=gen) * 0.1 if p.routing.correction_bias else None
    weights = torch.full((m, p.top_k), float("nan"))
    ids = torch.full((m, p.top_k), -1, dtype=torch.int32)
    logits = torch.full((m, e), float("nan"))
    got = dispatch.router_topk(x, w, bias, routing=p.routing, correction_bias=cbias, out_weights=weights,
                               out_ids=ids, logits_out=logits)
    assert got[0] is weights and got[1] is ids
    want_w, want_ids = spec.route(logits, p.routing, cbias)  # the torch tier's own fp32 logits
    assert torch.equal(ids, want_ids) and torch.equal(weights, want_w)
    assert torch.allclose(logits.double(), x.double() @ w.double().T + (0 if bias is None else bias.double()),
                          rtol=1e-5, atol=1e-5)
    packed = dispatch.router_topk(x, w, bias, routing=p.routing, correction_bias=cbias, packed=True)
    assert torch.equal(packed, spec.pack_topk(want_ids, want_w))
    torch._dynamo.reset()  # one compile per case, not recompiles of one lambda's code
    compiled = torch.compile(lambda x: dispatch.router_topk(x, w, bias, routing=p.routing, correction_bias=cbias),
                             fullgraph=True)
    cw, cid = compiled(x)
    assert torch.equal(cid, want_ids) and torch.equal(cw, want_w)


def test_norm_router_topk_dispatch_on_cpu(gen):
    p = presets.get("deepseek-v4-pro")
    x = torch.randn(3, 256, generator=gen).to(BF16) * 3
    nw = (1 + 0.1 * torch.randn(256, generator=gen)).to(BF16)
    w = (torch.randn(384, 256, generator=gen) / 16).to(BF16)
    cbias = torch.randn(384, generator=gen) * 0.1
    normed, weights, ids = dispatch.norm_router_topk(x, nw, w, routing=p.routing, correction_bias=cbias)
    want_normed, want_w, want_ids = spec.norm_router_topk(x, nw, w, routing=p.routing, correction_bias=cbias)
    assert torch.equal(normed, want_normed) and torch.equal(ids, want_ids)
    assert torch.allclose(weights, want_w, rtol=1e-6)
    torch._dynamo.reset()
    normed2, packed = torch.compile(lambda x: dispatch.norm_router_topk(x, nw, w, routing=p.routing,
                                                                        correction_bias=cbias, packed=True),
                                    fullgraph=True)(x)
    assert torch.equal(normed2, normed) and torch.equal(packed, spec.pack_topk(ids, weights))
