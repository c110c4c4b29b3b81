"""The routing step on the GPU (``router_topk``, ``norm_router_topk``, ``route``) against the spec.

Each call writes its fp32 logits into a NaN-poisoned ``logits_out``, and its selection is judged
against ``reference.route`` of those same logits, which isolates the selection from the GEMM's
summation order (the GEMM itself is judged as ``router_gemm``'s tests judge it: relative
Frobenius error <= 1e-5 against float64). Tolerances of the selection:
- ids: identical, except where the spec's choice values of the two experts that swap lie within
  1e-6 of each other relative to their size: the kernel's exp (CUDA's expf) and the spec's
  (torch's) may differ by an ulp or two, which can only reorder values that close. Such rows are
  rare on random inputs (the tests allow 1 in 500); exactly equal values must always go by
  index, and are tested on their own (ties).
- weights: within 1e-6 relative (+ 1e-30 absolute) of the spec's at every position where the
  ids agree: one ulp per exp, division and the few-term sums in the weights.
- NaN rows: NaN weights exactly where the spec's are; ids are k distinct experts in [0, E).
- packed: bit-exact to ``pack_topk`` of the kernel's unpacked result.
"""

import random

import pytest
import torch

import cute_kernels
from cute_kernels import presets
from cute_kernels import reference as spec
from cute_kernels.routing import RoutingConfig
from helpers import rel_frobenius, run_on_busy_stream

pytestmark = pytest.mark.gpu
M_VALUES = [0, 1, 2, 3, 7, 16, 33, 64, 128, 256]
PRESETS = list(presets.PRESETS.values())
_rng = random.Random(2207)


def _random_routing(rng):
    """A routing config valid for its E, with E often not a multiple of 32."""
    while True:
        scoring = rng.choice(["softmax", "sigmoid", "sqrt_softplus", "topk_softmax", "topk_sigmoid"])
        groups = 1 if scoring.startswith("topk_") else rng.choice([1, 1, 2, 4, 8])
        e = groups * rng.randint(2 if groups > 1 else 1, 1024 // groups)
        topk_group = rng.randint(1, groups)
        top_k = rng.randint(1, min(32, e, topk_group * e // groups))
        bias = not scoring.startswith("topk_") and rng.random() < 0.5
        h = 8 * rng.randint(1, 900)
        routing = RoutingConfig(scoring, top_k, groups, topk_group, rng.random() < 0.6, rng.choice([1.0, 2.5]), bias)
        return h, e, routing


RANDOM = [_random_routing(_rng) for _ in range(22)] + [
    (64, 32, RoutingConfig("softmax", 32)),  # top_k = 32 = E
    (256, 1, RoutingConfig("sigmoid", 1)),  # one expert
    (4096, 1000, RoutingConfig("sigmoid", 32, 8, 8, True, 1.0, True)),  # E not a multiple of 32, top_k 32
]


def make(m, h, e, routing, gen, x_dtype=torch.bfloat16, w_dtype=torch.bfloat16, scale=1.0):
    x = torch.randn(m, h, generator=gen).to(x_dtype).cuda()
    w = (torch.randn(e, h, generator=gen) * scale / h**0.5).to(w_dtype).cuda()
    cbias = (torch.randn(e, generator=gen) * 0.1).cuda() if routing.correction_bias else None
    return x, w, cbias


def choice_values(logits, routing, cbias):
    """The spec's choice values (scores plus correction bias), in float64."""
    if routing.scoring == "softmax":
        s = torch.softmax(logits.double(), dim=1)
    elif routing.scoring == "sigmoid":
        s = torch.sigmoid(logits.double())
    elif routing.scoring == "sqrt_softplus":
        s = torch.nn.functional.softplus(logits.double()).sqrt()
    else:
        s = logits.double()
    return s if cbias is None else s + cbias.double()


def assert_selection(weights, ids, logits, routing, cbias):
    """The kernel's (weights, ids) against ``reference.route`` of the same logits."""
    m, e = logits.shape
    k = routing.top_k
    assert ids.shape == (m, k) and ids.dtype == torch.int32 and weights.shape == (m, k)
    assert ((ids >= 0) & (ids < e)).all(), "an id outside [0, E)"
    if m:
        assert (ids.sort(dim=1).values.diff(dim=1) != 0).all(), "an id chosen twice"
    want_w, want_ids = spec.route(logits, routing, cbias)
    nan_rows = logits.isnan().any(dim=1)
    assert torch.equal(weights.isnan(), want_w.isnan()), "NaN weights where the spec has none, or the other way"
    same = ids == want_ids.to(ids.device)
    bad_rows = (~same.all(dim=1)) & ~nan_rows
    if bad_rows.any():
        c = choice_values(logits, routing, cbias)
        got = c.gather(1, ids.long())[bad_rows].sort(dim=1).values
        want = c.gather(1, want_ids.long())[bad_rows].sort(dim=1).values
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-30), (
            f"{int(bad_rows.sum())} rows chose other experts, not near-ties: {ids[bad_rows][:2]} vs "
            f"{want_ids[bad_rows][:2]}")
        assert int(bad_rows.sum()) <= max(1, m // 500), f"{int(bad_rows.sum())} of {m} rows reordered near-ties"
    ok = same & ~nan_rows[:, None]
    w, ww = weights.double()[ok], want_w.double()[ok]
    assert torch.allclose(w, ww, rtol=1e-6, atol=1e-30), f"weights off by {(w - ww).abs().max().item():.3g}"


def poisoned(m, k, e):
    return (torch.full((m, k), float("nan"), device="cuda"), torch.full((m, k), -1, dtype=torch.int32, device="cuda"),
            torch.full((m, e), float("nan"), device="cuda"))


def run_router_topk(x, w, routing, cbias, bias=None, **kw):
    m, e = x.shape[0], w.shape[0]
    weights, ids, logits = poisoned(m, routing.top_k, e)
    got = cute_kernels.router_topk(x, w, bias, routing=routing, correction_bias=cbias, out_weights=weights,
                                   out_ids=ids, logits_out=logits, **kw)
    torch.cuda.synchronize()
    assert got[0] is weights and got[1] is ids
    want_logits = x.double() @ w.double().T + (0 if bias is None else bias.double())
    if m:
        assert not logits.isnan().any() and rel_frobenius(logits, want_logits) <= 1e-5
    assert_selection(weights, ids, logits, routing, cbias)
    return weights, ids, logits


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
@pytest.mark.parametrize("m", M_VALUES)
def test_presets(preset, m, gen):
    w_dtype = torch.float32 if preset.gate_dtype == "float32" else torch.bfloat16
    x, w, cbias = make(m, preset.hidden_size, preset.num_experts, preset.routing, gen, w_dtype=w_dtype)
    bias = (torch.randn(preset.num_experts, generator=gen) * 0.1).to(w_dtype).cuda() if preset.gate_bias else None
    run_router_topk(x, w, preset.routing, cbias, bias)


@pytest.mark.parametrize("h,e,routing", RANDOM, ids=[f"{h}x{e}-{r.to_text()}" for h, e, r in RANDOM])
@pytest.mark.parametrize("m", [1, 7, 64])
def test_random_routings(h, e, routing, m, gen):
    x, w, cbias = make(m, h, e, routing, gen)
    run_router_topk(x, w, routing, cbias)


@pytest.mark.parametrize("m", [1, 33])
def test_packed_is_pack_topk_of_the_unpacked(m, gen):
    routing = presets.get("deepseek-v3").routing
    x, w, cbias = make(m, 7168, 256, routing, gen)
    weights, ids, _ = run_router_topk(x, w, routing, cbias)
    packed = cute_kernels.router_topk(x, w, routing=routing, correction_bias=cbias, packed=True)
    assert torch.equal(packed, spec.pack_topk(ids, weights))


@pytest.mark.parametrize("routing", [RoutingConfig("sigmoid", 8, 8, 4, True, 2.5, True), RoutingConfig("softmax", 8),
                                     RoutingConfig("topk_softmax", 4)], ids=lambda r: r.scoring)
def test_ties_go_to_the_lower_index(routing, gen):
    """Repeated weight rows give exactly equal logits: the lower expert index must win, always."""
    e, h = 256, 512
    base = torch.randn(16, h, generator=gen) / h**0.5
    w = base.repeat(e // 16, 1).to(torch.bfloat16).cuda()  # expert i == expert i % 16
    x = torch.randn(33, h, generator=gen).to(torch.bfloat16).cuda()
    cbias = torch.zeros(e, device="cuda") if routing.correction_bias else None
    weights, ids, logits = run_router_topk(x, w, routing, cbias)
    assert torch.equal(ids, spec.route(logits, routing, cbias)[1])  # exact: ties are not near-ties


def test_nan_rows_and_huge_and_tiny_logits(gen):
    for routing in (RoutingConfig("softmax", 8, renormalize=True), presets.get("deepseek-v3").routing,
                    presets.get("deepseek-v4-pro").routing):
        e = 384 if routing.scoring == "sqrt_softplus" else 256
        for scale in (1e-30, 1.0, 1e4):  # tiny, ordinary and huge logits (softmax must stay finite)
            x, w, cbias = make(9, 1024, e, routing, gen, scale=scale)
            x[3, 17] = float("nan")
            weights, ids, _ = run_router_topk(x, w, routing, cbias)
            assert weights[3].isnan().all() and not weights[[0, 1, 2, 4, 5, 6, 7, 8]].isnan().any()


def test_cuda_graph_and_busy_stream(gen):
    routing = presets.get("kimi-k2").routing
    x, w, cbias = make(16, 7168, 384, routing, gen)
    want = cute_kernels.router_topk(x, w, routing=routing, correction_bias=cbias)
    got = run_on_busy_stream(lambda x, w, c: cute_kernels.router_topk(x, w, routing=routing, correction_bias=c),
                             x, w, cbias)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    weights, ids = torch.full_like(want[0], float("nan")), torch.full_like(want[1], -1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        cute_kernels.router_topk(x, w, routing=routing, correction_bias=cbias, out_weights=weights, out_ids=ids)
    for _ in range(3):
        weights.fill_(float("nan")), ids.fill_(-1)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(weights, want[0]) and torch.equal(ids, want[1])


@pytest.mark.parametrize("preset", ["deepseek-v3", "qwen3-235b-a22b", "gpt-oss-120b"])
def test_hundred_runs_are_bitwise_identical(preset, gen):
    p = presets.get(preset)
    x, w, cbias = make(64, p.hidden_size, p.num_experts, p.routing, gen)
    bias = torch.randn(p.num_experts, generator=gen).to(torch.bfloat16).cuda() if p.gate_bias else None
    first = cute_kernels.router_topk(x, w, bias, routing=p.routing, correction_bias=cbias)
    for _ in range(100):
        again = cute_kernels.router_topk(x, w, bias, routing=p.routing, correction_bias=cbias)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


@pytest.mark.parametrize("preset", ["deepseek-v4-pro", "deepseek-v4-flash", "deepseek-v3"])
@pytest.mark.parametrize("m", [0, 1, 3, 16, 64])
def test_norm_router_topk(preset, m, gen):
    p = presets.get(preset)
    x, w, cbias = make(m, p.hidden_size, p.num_experts, p.routing, gen)
    x = x * 3
    nw = (1 + 0.2 * torch.randn(p.hidden_size, generator=gen)).to(torch.bfloat16).cuda()
    weights, ids, logits = poisoned(m, p.routing.top_k, p.num_experts)
    normed = torch.full_like(x, float("nan"))
    got = cute_kernels.norm_router_topk(x, nw, w, routing=p.routing, correction_bias=cbias, normed_out=normed,
                                        out_weights=weights, out_ids=ids, logits_out=logits)
    torch.cuda.synchronize()
    want_normed, want_logits = spec.norm_router_gemm(x, nw, w, 1e-6)
    assert got[0] is normed and torch.equal(normed.isnan(), want_normed.isnan())
    if m:
        assert rel_frobenius(logits, want_logits) <= 1e-5
    assert_selection(weights, ids, logits, p.routing, cbias)


@pytest.mark.parametrize("h,e,routing", RANDOM[:8] + RANDOM[-3:], ids=lambda v: str(v) if not isinstance(v, RoutingConfig)
                         else v.to_text())
def test_route_kernel(h, e, routing, gen):
    for m in (0, 1, 5, 129):
        logits = (torch.randn(m, e, generator=gen) * 2).cuda()
        cbias = (torch.randn(e, generator=gen) * 0.1).cuda() if routing.correction_bias else None
        weights, ids, _ = poisoned(m, routing.top_k, e)
        cute_kernels.route(logits, routing=routing, correction_bias=cbias, out_weights=weights, out_ids=ids)
        torch.cuda.synchronize()
        assert_selection(weights, ids, logits, routing, cbias)
