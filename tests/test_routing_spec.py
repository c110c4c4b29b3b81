"""CPU tests of the routing spec (``reference.route``, ``router_topk``, ``norm_router_topk``) and of
``RoutingConfig``, against an independent formula.

The expected results are computed differently from the reference on purpose: plain Python
floats (float64) from math.exp / math.log1p / math.sqrt, explicit loops, and sorted() with an
explicit key (NaN last, larger first, lower index first), never the reference's torch code.
Inputs come from the ``gen`` fixture (a fresh seed per run, printed with a failure).

Tolerances (the float64 formula against the fp32 spec), with u = 2**-24 (the largest relative
rounding error of one fp32 op):
- ids: exact, except where two float64 choice values are a near tie: distinct but within
  ``TIE_TOL`` = 2**-20 = 16 u of the magnitudes involved (``mag``: |score| + |bias|; for softmax
  the score times 4 + |x|, x = l - max, since rounding x moves exp(x) by |x| u, plus E / 16 with
  a bias, as the row sum's error of up to E u moves every score against the bias), several
  times what the few fp32 ops behind a choice value can move it, plus 2**-120 for values fp32
  holds as subnormals or 0. There either order is right: the check asks for the same value at
  every position within the tolerance, and still for exactly equal values (equal inputs) in
  index order, across the cut too. A near tie between a kept and a dropped group only checks
  that the ids lie in a group that could be kept; such rows are counted and must stay rare.
- weights: relative u * (16 + 2k + E for softmax's sum over E + 4 |x| for the rounded softmax
  exponents, |x| capped at 104 where exp underflows fp32), about twice the first-order bound
  (a sum of n positive terms errs by at most (n - 1) u, each other op by a few u); plus 2**-120
  absolute. NaN and +-inf must sit exactly where the formula puts them.
"""

import dataclasses
import math
import random
import struct

import pytest
import torch

from cute_kernels import presets
from cute_kernels import reference as R
from cute_kernels.routing import SCORINGS, RoutingConfig

FP32, BF16 = torch.float32, torch.bfloat16
NAN, INF = float("nan"), float("inf")
U = 2.0**-24
TIE_TOL = 2.0**-20
TINY = 2.0**-120


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


# ---------------------------------------------------------------- the independent formula

def py_sigmoid(v):
    if math.isnan(v):
        return NAN
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def py_sqrt_softplus(v):
    if math.isnan(v):
        return NAN
    if v > 30.0:  # log1p(exp(v)) = v + log1p(exp(-v)); also right for v = inf
        return math.sqrt(v + math.log1p(math.exp(-v)))
    return math.sqrt(math.log1p(math.exp(v)))


def py_softmax(vals):
    if any(math.isnan(v) for v in vals):
        return [NAN] * len(vals)
    top = max(vals)
    e = [math.exp(v - top) for v in vals]  # inf - inf is NaN in Python too
    total = math.fsum(e)
    return [x / total for x in e]


def div(a, b):
    if b == 0.0:
        return NAN if a == 0.0 or math.isnan(a) else math.copysign(INF, a)
    return a / b


def rank_key(values):
    """NaN below every number, larger first, then lower index (-0.0 equals 0.0 as numbers)."""
    return lambda i: (math.isnan(values[i]), 0.0 if math.isnan(values[i]) else -values[i], i)


def fin(v):
    return v if math.isfinite(v) else 0.0


def py_route(row, cfg, bias=None):
    """The routing of one row (Python floats) as a dict: ids, choice values c, their rounding
    scale mag, the allowed experts, and whether the kept groups are a near tie."""
    E, k = len(row), cfg.top_k
    if cfg.scoring == "softmax":
        s = py_softmax(row)
    elif cfg.scoring == "sigmoid":
        s = [py_sigmoid(v) for v in row]
    elif cfg.scoring == "sqrt_softplus":
        s = [py_sqrt_softplus(v) for v in row]
    else:
        s = list(row)
    b = bias if bias is not None else [0.0] * E
    c = [s[e] + b[e] for e in range(E)] if bias is not None else list(s)
    if cfg.scoring == "softmax":
        finite = [v for v in row if math.isfinite(v)]
        top = max(finite) if finite else 0.0
        spread = [min(abs(v - top), 104.0) if math.isfinite(v) else 0.0 for v in row]
        mag = [fin(s[e]) * (4 + spread[e] + (E / 16 if bias is not None else 0)) + abs(fin(b[e]))
               for e in range(E)]
    elif cfg.scoring in ("sigmoid", "sqrt_softplus"):
        mag = [abs(fin(s[e])) + abs(fin(b[e])) for e in range(E)]
    else:
        mag = [0.0] * E  # the logits choose: exact in both
    out = {"s": s, "c": c, "mag": mag, "group_tie": False}
    if cfg.n_group > 1:
        G, size = cfg.n_group, E // cfg.n_group
        gscore, gmag = [], []
        for g in range(G):
            members = range(g * size, (g + 1) * size)
            a, b2 = sorted(members, key=rank_key(c))[:2]
            gscore.append(c[a] + c[b2])
            gmag.append(mag[a] + mag[b2])
        order = sorted(range(G), key=rank_key(gscore))
        kept, dropped = order[:cfg.topk_group], order[cfg.topk_group:]
        near = {d for d in dropped for a in kept if near_tie(gscore[a], gscore[d], gmag[a], gmag[d])}
        out["group_tie"] = bool(near)
        out["maybe_allowed"] = {e for g in kept + sorted(near) for e in range(g * size, (g + 1) * size)}
        allowed = [e for g in sorted(kept) for e in range(g * size, (g + 1) * size)]
    else:
        allowed = list(range(E))
    out["allowed"] = allowed
    out["ids"] = sorted(allowed, key=rank_key(c))[:k]
    return out


def near_tie(a, b, ma, mb):
    """Distinct values that fp32 rounding could order either way."""
    if math.isnan(a) or math.isnan(b) or a == b:
        return False
    return abs(a - b) <= TIE_TOL * (fin(ma) + fin(mb)) + TINY


def same_or_near(a, b, ma, mb):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or near_tie(a, b, ma, mb)


def py_weights(row, cfg, s, ids):
    """The weights of the chosen ``ids`` (Python floats), and their relative tolerance."""
    k = len(ids)
    if cfg.scoring == "topk_softmax":
        chosen = [row[i] for i in ids]
        w = py_softmax(chosen)
        finite = [v for v in chosen if math.isfinite(v)]
        span = max(min(abs(v - max(finite)), 104.0) for v in finite) if finite else 0.0
    elif cfg.scoring == "topk_sigmoid":
        w, span = [py_sigmoid(row[i]) for i in ids], 0.0
    else:
        w = [s[i] for i in ids]
        finite = [v for v in row if math.isfinite(v)]
        span = (max(min(abs(row[i] - max(finite)), 104.0) for i in ids if math.isfinite(row[i]))
                if cfg.scoring == "softmax" and finite and any(math.isfinite(row[i]) for i in ids) else 0.0)
    if cfg.renormalize:
        total = math.fsum(w)
        w = [div(x, total) for x in w]
    scale = f32(cfg.scaling)
    w = [x * scale for x in w]
    if any(math.isnan(v) for v in row):
        w = [NAN] * k
    units = 16 + 2 * k + (len(row) if cfg.scoring == "softmax" else 0) + 4 * span
    return w, units * U


def assert_route_matches(logits, cfg, bias=None):
    """The spec on ``logits`` against the formula, row by row. Returns how many rows had a near
    tie between a kept and a dropped group (only partly checkable)."""
    weights, ids = R.route(logits, cfg, bias)
    M, E = logits.shape
    k = cfg.top_k
    assert weights.shape == (M, k) and weights.dtype == FP32 and weights.is_contiguous()
    assert ids.shape == (M, k) and ids.dtype == torch.int32 and ids.is_contiguous()
    rows, blist = logits.tolist(), bias.tolist() if bias is not None else None
    group_ties = 0
    for m in range(M):
        ref = py_route(rows[m], cfg, blist)
        got = ids[m].tolist()
        where = f"row {m}: got ids {got}, formula {ref['ids']}"
        assert len(set(got)) == k and all(0 <= i < E for i in got), where
        if ref["group_tie"]:
            group_ties += 1
            assert all(i in ref["maybe_allowed"] for i in got), where
        else:
            c, mag = ref["c"], ref["mag"]
            allowed = set(ref["allowed"])
            assert all(i in allowed for i in got), where
            for j in range(k):  # the j-th best value, whichever expert of a near tie holds it
                a, b = got[j], ref["ids"][j]
                assert same_or_near(c[a], c[b], mag[a], mag[b]), f"{where}: position {j}"

            def vkey(v):
                return "nan" if math.isnan(v) else v

            last = {}
            for j in range(k):  # exactly equal values in index order, also across the cut
                key = vkey(c[got[j]])
                assert key not in last or last[key] < got[j], f"{where}: tie order"
                last[key] = got[j]
            for e in allowed.difference(got):
                key = vkey(c[e])
                assert key not in last or e > last[key], f"{where}: tie lost to expert {e}"
        want, rtol = py_weights(rows[m], cfg, ref["s"], got)
        have = weights[m].tolist()
        for j in range(k):
            x, y = have[j], want[j]
            if math.isnan(y) or math.isinf(y):
                assert (math.isnan(x) and math.isnan(y)) or x == y, f"row {m} weight {j}: {x} vs {y}"
            else:
                assert abs(x - y) <= rtol * abs(y) + TINY, f"row {m} weight {j}: {x} vs {y} (rtol {rtol:.3g})"
    return group_ties


# ---------------------------------------------------------------- random configurations

E_CHOICES = [1, 2, 3, 5, 8, 12, 16, 31, 33, 40, 64, 96, 100, 128, 160, 256, 384, 512, 896]


def random_config(rng, E):
    scoring = rng.choice(SCORINGS)
    topk = scoring.startswith("topk_")
    groups = [1] if topk else [1] + [g for g in range(2, E + 1) if E % g == 0 and E // g >= 2]
    G = rng.choice(groups)
    tg = rng.randint(1, G)
    kmax = min(32, tg * (E // G))
    k = rng.choice([1, kmax, rng.randint(1, kmax)])
    return RoutingConfig(scoring, k, n_group=G, topk_group=tg, renormalize=rng.random() < 0.5,
                         scaling=rng.choice([1.0, 2.5, 2.827, 0.37]),
                         correction_bias=not topk and rng.random() < 0.5)


def random_logits(rng, gen, M, E):
    style = rng.choice(["normal", "normal", "grid", "repeats", "special"])
    x = torch.randn(M, E, generator=gen) * rng.choice([0.25, 1.0, 3.0, 8.0])
    if style == "grid":  # few distinct values: many exact ties
        x = torch.randint(-8, 9, (M, E), generator=gen).float() / 4
    elif style == "repeats" and E > 1:  # copies of a few columns
        src = torch.randint(0, E, (E,), generator=gen)
        x = x[:, src]
    elif style == "special":
        pick = torch.rand(M, E, generator=gen)
        specials = torch.tensor([NAN, INF, -INF, 3e38, -3e38, 1e-30, -0.0, 0.0])
        which = torch.randint(0, len(specials), (M, E), generator=gen)
        x = torch.where(pick < 0.15, specials[which], x)
    return x.float().contiguous()


def random_bias(rng, gen, E):
    b = torch.randn(E, generator=gen) * rng.choice([0.01, 0.1, 1.0])
    if rng.random() < 0.2:
        b = torch.randint(-2, 3, (E,), generator=gen).float() / 8
    if rng.random() < 0.05:
        b[torch.randint(0, E, (1,), generator=gen)] = rng.choice([NAN, INF, -INF])
    return b.float()


def test_random_configurations(gen):
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))
    rows = group_ties = 0
    for _ in range(300):
        E = rng.choice(E_CHOICES)
        cfg = random_config(rng, E)
        M = rng.randint(1, 6)
        logits = random_logits(rng, gen, M, E)
        bias = random_bias(rng, gen, E) if cfg.correction_bias else None
        group_ties += assert_route_matches(logits, cfg, bias)
        rows += M
    # A near tie between a kept and a dropped group (two group scores within the tolerance, e.g.
    # sigmoid saturating to 1.0 in fp32 but not in float64) is rare: most rows are fully checked.
    assert group_ties <= rows // 10, f"{group_ties} of {rows} rows had a group near tie"


EDGE_SHAPES = [  # (E, top_k, n_group, topk_group)
    (1, 1, 1, 1), (2, 2, 1, 1), (32, 32, 1, 1), (33, 32, 1, 1), (33, 1, 1, 1), (100, 32, 10, 4),
    (8, 8, 4, 4), (6, 6, 3, 3), (896, 16, 1, 1), (96, 32, 3, 1), (160, 7, 8, 3), (256, 8, 8, 4)]


@pytest.mark.parametrize("scoring,E,k,G,tg", [
    (sc, *shape) for sc in SCORINGS for shape in EDGE_SHAPES if shape[2] == 1 or not sc.startswith("topk_")])
@pytest.mark.parametrize("renormalize", [False, True])
def test_edge_shapes(gen, scoring, E, k, G, tg, renormalize):
    bias = not scoring.startswith("topk_")
    cfg = RoutingConfig(scoring, k, n_group=G, topk_group=tg, renormalize=renormalize, scaling=2.5,
                        correction_bias=bias)
    logits = torch.randn(5, E, generator=gen) * 2
    b = torch.randn(E, generator=gen) * 0.1 if bias else None
    assert assert_route_matches(logits, cfg, b) <= 1


# ---------------------------------------------------------------- ties, order, groups

@pytest.mark.parametrize("scoring", SCORINGS)
def test_ties_lower_index_first(scoring):
    logits = torch.tensor([[0.5, 2.0, 2.0, 0.5, 2.0, 1.0, 2.0, 0.5]])
    w, ids = R.route(logits, RoutingConfig(scoring, 6))
    assert ids[0].tolist() == [1, 2, 4, 6, 5, 0]
    assert w[0, 0] == w[0, 1] == w[0, 2] == w[0, 3]
    # All equal: the first k indices, whatever k.
    for k in (1, 3, 8):
        assert R.route(torch.zeros(2, 8), RoutingConfig(scoring, k))[1].tolist() == [list(range(k))] * 2


def test_signed_zeros_compare_equal():
    for row in ([-0.0, 0.0, -1.0], [0.0, -0.0, -1.0]):
        assert R.route(torch.tensor([row]), RoutingConfig("topk_sigmoid", 2))[1].tolist() == [[0, 1]]


def test_group_ties_lower_group_first():
    # Groups of 2: group 1 is best; groups 0 and 3 tie for second (equal inputs), group 2 last.
    logits = torch.tensor([[1.0, 1.0, 3.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    cfg = RoutingConfig("sigmoid", 4, n_group=4, topk_group=2)
    _, ids = R.route(logits, cfg)
    assert ids[0].tolist() == [2, 0, 1, 3]  # experts 6 and 7 (group 3, value 1.0) never chosen
    assert R.route(logits, dataclasses.replace(cfg, top_k=3))[1][0].tolist() == [2, 0, 1]


def test_group_score_is_sum_of_two_best():
    # Group 0's best expert is the row's best, but group 1's two best sum higher.
    logits = torch.tensor([[4.0, -4.0, -4.0, -4.0, 2.0, 2.0, -4.0, -4.0]])
    _, ids = R.route(logits, RoutingConfig("sigmoid", 2, n_group=2, topk_group=1))
    assert ids[0].tolist() == [4, 5]


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid", "sqrt_softplus"])
def test_groups_with_negative_choice_values_never_leak(scoring, gen):
    """Every kept choice value is negative: experts outside the kept groups (which a fill value
    of 0 would make look better) must still never be chosen."""
    E, G, S = 16, 8, 2
    logits = torch.randn(4, E, generator=gen)
    bias = torch.full((E,), -50.0)
    bias[2:4] = -10.0  # group 1 is the best group, by far, and all its values are < 0
    bias[12:14] = -20.0  # group 6 second
    w, ids = R.route(logits, RoutingConfig(scoring, 2, n_group=G, topk_group=1, correction_bias=True), bias)
    assert sorted(ids[0].tolist()) == [2, 3] and all(sorted(r) == [2, 3] for r in ids.tolist())
    _, ids = R.route(logits, RoutingConfig(scoring, 3, n_group=G, topk_group=2, correction_bias=True), bias)
    for r in ids.tolist():
        assert set(r) <= {2, 3, 12, 13} and {2, 3} <= set(r)
    assert assert_route_matches(logits, RoutingConfig(scoring, 3, n_group=G, topk_group=2, correction_bias=True),
                                bias) == 0
    assert (w > 0).all()  # the weights are the unbiased scores


def test_bias_chooses_but_does_not_weigh():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0])
    w, ids = R.route(logits, RoutingConfig("sigmoid", 2, correction_bias=True), bias)
    assert ids[0].tolist() == [3, 0]
    assert w[0].tolist() == torch.sigmoid(torch.tensor([0.0, 3.0])).tolist()


def test_renormalize_then_scaling():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    w, _ = R.route(logits, RoutingConfig("sigmoid", 2, renormalize=True, scaling=2.5))
    s = [py_sigmoid(2.0), py_sigmoid(1.0)]
    for x, y in zip(w[0].tolist(), [v / sum(s) * 2.5 for v in s]):
        assert abs(x - y) <= 8 * U * y
    assert abs(sum(w[0].tolist()) - 2.5) <= 8 * U * 2.5


# ---------------------------------------------------------------- NaN, inf, huge and tiny logits

@pytest.mark.parametrize("scoring", SCORINGS)
def test_nan_rows(scoring, gen):
    grouped = not scoring.startswith("topk_")
    cfg = RoutingConfig(scoring, 4, n_group=4 if grouped else 1, topk_group=2 if grouped else 1,
                        renormalize=True, correction_bias=grouped)
    E = 16
    logits = torch.randn(5, E, generator=gen)
    bias = torch.randn(E, generator=gen) * 0.1 if grouped else None
    logits[1, 5] = NAN
    logits[3] = NAN
    w, ids = R.route(logits, cfg, bias)
    assert w[[1, 3]].isnan().all() and not w[[0, 2, 4]].isnan().any()
    assert assert_route_matches(logits, cfg, bias) == 0
    assert ids[3].tolist() == [0, 1, 2, 3]  # every choice value NaN: the lowest k indices
    if scoring == "softmax":
        assert ids[1].tolist() == [0, 1, 2, 3]  # one NaN makes the whole softmax NaN
    else:
        assert 5 not in ids[1].tolist()  # the NaN expert ranks last
    # Other rows are unaffected: the same as routed without the NaN rows.
    w2, ids2 = R.route(logits[[0, 2, 4]], cfg, bias)
    assert torch.equal(w2, w[[0, 2, 4]]) and torch.equal(ids2, ids[[0, 2, 4]])


@pytest.mark.parametrize("scoring", ["sigmoid", "sqrt_softplus", "topk_sigmoid", "topk_softmax"])
def test_nan_experts_fill_up_last(scoring):
    w, ids = R.route(torch.tensor([[NAN, 1.0, NAN, 2.0]]), RoutingConfig(scoring, 4))
    assert ids[0].tolist() == [3, 1, 0, 2] and w.isnan().all()
    # NaN ranks below -inf too.
    _, ids = R.route(torch.tensor([[NAN, -INF, 1.0, NAN, -INF]]), RoutingConfig(scoring, 5))
    assert ids[0].tolist() == [2, 1, 4, 0, 3]


def test_nan_correction_bias_ranks_last():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    bias = torch.tensor([NAN, 0.0, 0.0, 0.0])
    w, ids = R.route(logits, RoutingConfig("sigmoid", 2, correction_bias=True), bias)
    assert ids.tolist() == [[1, 2], [3, 2]] and not w.isnan().any()
    _, ids = R.route(logits, RoutingConfig("sigmoid", 4, correction_bias=True), bias)
    assert ids.tolist() == [[1, 2, 3, 0], [3, 2, 1, 0]]


@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("renormalize", [False, True])
def test_inf_logits(scoring, renormalize):
    rows = torch.tensor([
        [INF, 1.0, -INF, 0.5, -1.0, 2.0],
        [-INF, -INF, -INF, -INF, -INF, -INF],
        [INF, INF, 0.0, -INF, 1.0, -2.0],
        [-INF, 0.0, -INF, 1.0, -INF, -INF],
    ])
    cfg = RoutingConfig(scoring, 3, renormalize=renormalize)
    w, ids = R.route(rows, cfg)
    assert assert_route_matches(rows, cfg) == 0
    if scoring == "softmax":  # a +inf, or only -inf: NaN everywhere (inf - inf), the lowest ids
        assert ids.tolist() == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 1, 0]]
        assert w[:3].isnan().all() and w[3, 2] == 0 and not w[3].isnan().any()
        return
    assert ids.tolist() == [[0, 5, 1], [0, 1, 2], [0, 1, 4], [3, 1, 0]]  # -inf ties among -inf
    if scoring in ("sigmoid", "topk_sigmoid"):
        if renormalize:
            assert w[1].isnan().all()  # 0 / 0
        else:
            assert w[0, 0] == 1.0 and w[1].tolist() == [0.0, 0.0, 0.0]
    if scoring == "sqrt_softplus":
        if renormalize:  # inf / inf and x / inf
            assert w[0, 0].isnan() and (w[0, 1:] == 0).all() and w[2, :2].isnan().all() and w[2, 2] == 0
        else:
            assert w[0, 0] == INF and w[1].tolist() == [0.0, 0.0, 0.0]
    if scoring == "topk_softmax":  # a softmax over chosen logits holding +inf, or only -inf
        assert w[:3].isnan().all() and w[3, 2] == 0


def test_softmax_huge_and_tiny_logits_are_stable():
    cfg = RoutingConfig("softmax", 2)
    w, ids = R.route(torch.tensor([[3e38, 3e38, -3e38, 0.0, 1e30]]), cfg)
    assert ids[0].tolist() == [0, 1] and w[0].tolist() == [0.5, 0.5]
    w, ids = R.route(torch.tensor([[100.0, 99.0, 0.0, -100.0]]), cfg)  # exp(100) overflows fp32
    assert ids[0].tolist() == [0, 1]
    assert abs(w[0, 0].item() - 1 / (1 + math.exp(-1))) <= 8 * U
    # exp(-1e4) and exp(-2e4) both round to 0: equal scores, so the lower index wins.
    w, ids = R.route(torch.tensor([[1e4, -1e4, 0.0]]), cfg)
    assert w[0].tolist() == [1.0, 0.0] and ids[0].tolist() == [0, 1]
    # Tiny differences vanish in exp: equal scores, the lowest indices, uniform weights.
    tiny = torch.tensor([[1e-30, -1e-30, 3e-30, 2e-38, 0.0, -5e-31, 1e-35, 7e-31]])
    w, ids = R.route(tiny, RoutingConfig("softmax", 3))
    assert ids[0].tolist() == [0, 1, 2] and w[0].tolist() == [f32(1 / 8)] * 3
    for logits in ([[3e38, -3e38, 1.0, 2.0]], [[50.0, 60.0, 70.0, 80.0]], tiny.tolist()):
        assert assert_route_matches(torch.tensor(logits), RoutingConfig("softmax", 2, renormalize=True)) == 0


def test_topk_softmax_is_softmax_over_the_chosen():
    logits = torch.tensor([[1.0, 3.0, 2.0, -5.0, 0.0]])
    w, ids = R.route(logits, RoutingConfig("topk_softmax", 3))
    assert ids[0].tolist() == [1, 2, 0]
    want = py_softmax([3.0, 2.0, 1.0])
    assert all(abs(x - y) <= 16 * U * y for x, y in zip(w[0].tolist(), want))
    w, _ = R.route(torch.tensor([[1e30, 3e38, -3e38]]), RoutingConfig("topk_softmax", 2))
    assert w[0].tolist() == [1.0, 0.0]  # max subtracted


# ---------------------------------------------------------------- shapes, M = 0, presets

@pytest.mark.parametrize("scoring", SCORINGS)
def test_empty_batch(scoring):
    grouped = not scoring.startswith("topk_")
    cfg = RoutingConfig(scoring, 8, n_group=8 if grouped else 1, topk_group=4 if grouped else 1,
                        renormalize=True, correction_bias=grouped)
    w, ids = R.route(torch.empty(0, 64), cfg, torch.zeros(64) if grouped else None)
    assert w.shape == (0, 8) and w.dtype == FP32 and ids.shape == (0, 8) and ids.dtype == torch.int32
    x, gw = torch.empty(0, 32, dtype=BF16), torch.randn(64, 32).to(BF16)
    w, ids = R.router_topk(x, gw, routing=cfg, correction_bias=torch.zeros(64) if grouped else None)
    assert w.shape == (0, 8) and ids.shape == (0, 8)
    normed, w, ids = R.norm_router_topk(x, torch.ones(32), gw, routing=cfg,
                                        correction_bias=torch.zeros(64) if grouped else None)
    assert normed.shape == (0, 32) and w.shape == (0, 8) and ids.shape == (0, 8)


def test_rows_are_independent_and_inputs_untouched(gen):
    cfg = RoutingConfig("sigmoid", 8, n_group=8, topk_group=4, renormalize=True, scaling=2.5, correction_bias=True)
    logits, bias = torch.randn(7, 256, generator=gen), torch.randn(256, generator=gen) * 0.1
    before = (logits.clone(), bias.clone())
    w, ids = R.route(logits, cfg, bias)
    assert torch.equal(logits, before[0]) and torch.equal(bias, before[1])
    for m in range(7):
        wm, im = R.route(logits[m:m + 1], cfg, bias)
        assert torch.equal(wm[0], w[m]) and torch.equal(im[0], ids[m])
    w2, ids2 = R.route(logits.t().contiguous().t(), cfg, bias)  # any strides
    assert torch.equal(w2, w) and torch.equal(ids2, ids)


# Each preset's routing as researched (the comments in presets.py name the sources); a change
# there must be deliberate: (scoring, n_group, topk_group, renormalize, scaling, correction_bias).
PRESET_ROUTING = {
    "deepseek-v3": ("sigmoid", 8, 4, True, 2.5, True),
    "kimi-k2": ("sigmoid", 1, 1, True, 2.827, True),
    "deepseek-v4-pro": ("sqrt_softplus", 1, 1, True, 2.5, True),
    "deepseek-v4-flash": ("sqrt_softplus", 1, 1, True, 1.5, True),
    "kimi-k3": ("sigmoid", 1, 1, True, 1.0, True),
    "gpt-oss-120b": ("topk_softmax", 1, 1, False, 1.0, False),
    "gpt-oss-20b": ("topk_softmax", 1, 1, False, 1.0, False),
    "minimax-m2": ("sigmoid", 1, 1, True, 1.0, True),
    "minimax-m3": ("sigmoid", 1, 1, True, 2.0, True),
    "glm-5": ("sigmoid", 1, 1, True, 2.5, True),
    "glm-4.5": ("sigmoid", 1, 1, True, 2.5, True),
    "qwen3-235b-a22b": ("softmax", 1, 1, True, 1.0, False),
    "qwen3-30b-a3b": ("softmax", 1, 1, True, 1.0, False),
    "qwen3-next": ("softmax", 1, 1, True, 1.0, False),
    "llama-4-maverick": ("topk_sigmoid", 1, 1, False, 1.0, False),
    "mixtral-8x7b": ("softmax", 1, 1, True, 1.0, False),
}


def test_every_preset_has_its_routing():
    assert set(PRESET_ROUTING) == set(presets.PRESETS)
    for name, p in presets.PRESETS.items():
        r = p.routing
        assert (r.scoring, r.n_group, r.topk_group, r.renormalize, r.scaling, r.correction_bias) == PRESET_ROUTING[name]
        assert r.top_k == p.top_k
        r.check(p.num_experts)


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_preset_routing(name, gen):
    p = presets.get(name)
    E, H = p.num_experts, p.hidden_size
    bias = torch.randn(E, generator=gen) * 0.05 if p.routing.correction_bias else None
    x = torch.randn(4, H, generator=gen).to(BF16)
    gate = (torch.randn(E, H, generator=gen) * H**-0.5).to(getattr(torch, p.gate_dtype))
    if p.norm_router:
        nw = (1 + 0.1 * torch.randn(H, generator=gen)).to(BF16)
        normed, w, ids = R.norm_router_topk(x, nw, gate, 1e-6, routing=p.routing, correction_bias=bias)
        want_normed, logits = R.norm_router_gemm(x, nw, gate, 1e-6)
        assert torch.equal(normed, want_normed)
    else:
        gb = (0.1 * torch.randn(E, generator=gen)).to(BF16) if p.gate_bias else None
        w, ids = R.router_topk(x, gate, gb, routing=p.routing, correction_bias=bias)
        logits = R.router_gemm(x, gate, gb)
    w2, ids2 = R.route(logits, p.routing, bias)
    assert torch.equal(w, w2) and torch.equal(ids, ids2)  # exactly route(fp32 logits)
    assert assert_route_matches(logits, p.routing, bias) <= 1
    assert torch.equal(R.unpack_topk(R.pack_topk(ids, w))[0], ids)  # the packed form
    if p.routing.renormalize:
        assert torch.allclose(w.sum(dim=1), torch.full((4,), f32(p.routing.scaling)), rtol=1e-5)


def test_preset_rejects_mismatched_routing():
    with pytest.raises(ValueError, match=r"^routing:"):
        presets.Preset("x", "m", 64, 8, 2, 64, routing=RoutingConfig("softmax", 3))
    with pytest.raises(ValueError, match=r"^n_group:"):
        presets.Preset("x", "m", 64, 8, 2, 64, routing=RoutingConfig("sigmoid", 2, n_group=3))
    with pytest.raises(TypeError, match=r"^routing:"):
        presets.Preset("x", "m", 64, 8, 2, 64, routing=("softmax", 2))
    with pytest.raises(TypeError):
        presets.Preset("x", "m", 64, 8, 2, 64)  # routing is required


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(scoring="relu", top_k=4), ValueError, "scoring"),
    (dict(scoring=1, top_k=4), TypeError, "scoring"),
    (dict(scoring="softmax", top_k=0), ValueError, "top_k"),
    (dict(scoring="softmax", top_k=33), ValueError, "top_k"),
    (dict(scoring="softmax", top_k=2.0), TypeError, "top_k"),
    (dict(scoring="softmax", top_k=True), TypeError, "top_k"),
    (dict(scoring="sigmoid", top_k=2, n_group=0), ValueError, "n_group"),
    (dict(scoring="sigmoid", top_k=2, n_group=4, topk_group=0), ValueError, "topk_group"),
    (dict(scoring="sigmoid", top_k=2, n_group=4, topk_group=5), ValueError, "topk_group"),
    (dict(scoring="sigmoid", top_k=2, topk_group=2), ValueError, "topk_group"),
    (dict(scoring="sigmoid", top_k=2, n_group="8"), TypeError, "n_group"),
    (dict(scoring="sigmoid", top_k=2, renormalize=1), TypeError, "renormalize"),
    (dict(scoring="sigmoid", top_k=2, correction_bias="yes"), TypeError, "correction_bias"),
    (dict(scoring="sigmoid", top_k=2, scaling=0.0), ValueError, "scaling"),
    (dict(scoring="sigmoid", top_k=2, scaling=-1.0), ValueError, "scaling"),
    (dict(scoring="sigmoid", top_k=2, scaling=INF), ValueError, "scaling"),
    (dict(scoring="sigmoid", top_k=2, scaling=NAN), ValueError, "scaling"),
    (dict(scoring="sigmoid", top_k=2, scaling="2.5"), TypeError, "scaling"),
    (dict(scoring="sigmoid", top_k=2, scaling=True), TypeError, "scaling"),
    (dict(scoring="topk_softmax", top_k=2, n_group=2), ValueError, "n_group"),
    (dict(scoring="topk_sigmoid", top_k=2, correction_bias=True), ValueError, "correction_bias"),
])
def test_config_errors(kwargs, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        RoutingConfig(**kwargs)


@pytest.mark.parametrize("cfg,E,exc,name", [
    (RoutingConfig("softmax", 9), 8, ValueError, "top_k"),
    (RoutingConfig("sigmoid", 2, n_group=3), 8, ValueError, "n_group"),  # E % n_group
    (RoutingConfig("sigmoid", 2, n_group=8, topk_group=4), 8, ValueError, "n_group"),  # groups of one
    (RoutingConfig("sigmoid", 9, n_group=8, topk_group=2), 32, ValueError, "top_k"),  # > 2 groups of 4
    (RoutingConfig("sigmoid", 2), 0, ValueError, "num_experts"),
    (RoutingConfig("sigmoid", 2), 8.0, TypeError, "num_experts"),
])
def test_check_errors(cfg, E, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        cfg.check(E)


def test_check_accepts_edges():
    RoutingConfig("sigmoid", 8, n_group=8, topk_group=2).check(32)  # exactly 2 groups of 4
    RoutingConfig("sigmoid", 6, n_group=3, topk_group=3).check(6)  # E = top_k, groups of 2
    RoutingConfig("softmax", 1).check(1)
    RoutingConfig("sigmoid", 32, scaling=3).check(32)
    assert RoutingConfig("sigmoid", 1, scaling=3).scaling == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        RoutingConfig("sigmoid", 1).top_k = 2


L = torch.zeros(2, 8)
CB = RoutingConfig("sigmoid", 2, correction_bias=True)
NB = RoutingConfig("sigmoid", 2)
X, W = torch.zeros(2, 16, dtype=BF16), torch.zeros(8, 16, dtype=BF16)


@pytest.mark.parametrize("call,exc,name", [
    (lambda: R.route(L.tolist(), NB), TypeError, "logits"),
    (lambda: R.route(L[0], NB), ValueError, "logits"),
    (lambda: R.route(L.to(BF16), NB), TypeError, "logits"),
    (lambda: R.route(L.double(), NB), TypeError, "logits"),
    (lambda: R.route(L, "sigmoid"), TypeError, "routing"),
    (lambda: R.route(L, RoutingConfig("sigmoid", 9)), ValueError, "top_k"),
    (lambda: R.route(L, RoutingConfig("sigmoid", 2, n_group=3)), ValueError, "n_group"),
    (lambda: R.route(L, CB), ValueError, "correction_bias"),
    (lambda: R.route(L, NB, torch.zeros(8)), ValueError, "correction_bias"),
    (lambda: R.route(L, CB, torch.zeros(8, dtype=BF16)), TypeError, "correction_bias"),
    (lambda: R.route(L, CB, torch.zeros(9)), ValueError, "correction_bias"),
    (lambda: R.route(L, CB, torch.zeros(1, 8)), ValueError, "correction_bias"),
    (lambda: R.route(L, CB, [0.0] * 8), TypeError, "correction_bias"),
    (lambda: R.router_topk(X, W, routing=None), TypeError, "routing"),
    (lambda: R.router_topk(X.int(), W, routing=NB), TypeError, "x"),
    (lambda: R.router_topk(X, W[:, :8], routing=NB), ValueError, "weight"),
    (lambda: R.router_topk(X, W, routing=CB), ValueError, "correction_bias"),
    (lambda: R.router_topk(X, W, routing=RoutingConfig("softmax", 9)), ValueError, "top_k"),
    (lambda: R.norm_router_topk(X.float(), W[0], W, routing=NB), TypeError, "x"),
    (lambda: R.norm_router_topk(X, W[0, :9], W, routing=NB), ValueError, "norm_weight"),
    (lambda: R.norm_router_topk(X, torch.ones(16), W, routing="x"), TypeError, "routing"),
    (lambda: R.norm_router_topk(X, torch.ones(16), W, routing=CB, correction_bias=torch.zeros(7)),
     ValueError, "correction_bias"),
])
def test_argument_errors(call, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        call()


def test_router_topk_is_route_of_fp32_logits(gen):
    x, w = torch.randn(6, 64, generator=gen).to(BF16), torch.randn(40, 64, generator=gen)
    b, cb = torch.randn(40, generator=gen), torch.randn(40, generator=gen) * 0.1
    cfg = RoutingConfig("sqrt_softplus", 6, n_group=4, topk_group=2, renormalize=True, scaling=1.5,
                        correction_bias=True)
    got = R.router_topk(x, w, b, routing=cfg, correction_bias=cb)
    want = R.route(R.router_gemm(x, w, b, out_dtype=FP32), cfg, cb)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    nw = torch.randn(64, generator=gen)
    normed, *got = R.norm_router_topk(x, nw, w.to(BF16), 1e-5, routing=cfg, correction_bias=cb)
    want_normed, logits = R.norm_router_gemm(x, nw, w.to(BF16), 1e-5)
    want = R.route(logits, cfg, cb)
    assert torch.equal(normed, want_normed) and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
