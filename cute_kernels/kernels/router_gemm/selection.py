"""Choosing each token's top-k experts from its fp32 logits, as ``cute_kernels.reference.route``
specifies: one warp per token, lane l holding experts [l * V, (l + 1) * V) (V = E / 32 rounded
up) in registers.

Order: every ranking compares an int32 key that orders fp32 values as the spec does (larger
first, -0.0 equal to +0.0, NaN below -inf) and then the expert (or group) index, lower first,
so results are exact and deterministic: a lane keeps its best candidate, and a butterfly of
shuffles, in a fixed order, gives every lane the warp's. Groups: each group's two best choice
values are merged the same way and summed; the topk_group best groups' experts stay eligible.
Then top_k rounds of "best eligible expert" pick the ids, best first; the lane of pick t keeps
it, and the weights (unbiased scores, softmax or sigmoid of the chosen logits for the topk_*
scorings, renormalised, scaled) are reduced over those lanes.
"""

from typing import NamedTuple

import cutlass
import cutlass.cute as cute

from ..common import WARP
from ..ptx import f32_bits, load_global_cg, warp_sum

Float32, Int32 = cutlass.Float32, cutlass.Int32

NONE_KEY = -(2**31)  # no candidate: below every value
NAN_KEY = -(2**31) + 1  # NaN: below every number, -inf included
NO_INDEX = 2**31 - 1


def bit(j: int) -> int:
    """Bit j of an int32 mask, as the signed value Int32 takes."""
    return (1 << j) - (1 << 32 if j == 31 else 0)


class SelectOperands(NamedTuple):
    """What selecting reads and writes: ``logits`` fp32 [M, E] in global memory (written by this
    grid's CTAs, or by the previous kernel); ``cbias`` the correction bias [E] (shared or global
    memory; unread without one); the outputs ``weights`` fp32 [M, k] (unread when packed) and
    ``ids`` int32 [M, k] (the packed values when packed); ``scaling``; with the fused GEMM the
    token tiles' arrival ``counters`` and the CTA's shared ``last`` flag."""
    logits: object
    cbias: object
    weights: object
    ids: object
    scaling: object
    counters: object = None
    last: object = None


@cute.jit
def order_key(v: Float32) -> Int32:
    """An int32 that orders fp32 values as the spec ranks them: -0.0 as +0.0, NaN lowest."""
    b = f32_bits(v)
    b = cutlass.select_(b == Int32(NONE_KEY), Int32(0), b)  # -0.0
    key = cutlass.select_(b < Int32(0), b ^ Int32(0x7FFFFFFF), b)
    return cutlass.select_(v != v, Int32(NAN_KEY), key)


@cute.jit
def better(key, index, other_key, other_index):
    """Whether (other_key, other_index) ranks before (key, index)."""
    return (other_key > key) | ((other_key == key) & (other_index < index))


@cute.jit
def warp_best(key, index):
    """The warp's best (key, index), in every lane."""
    offset = WARP // 2
    while offset >= 1:  # unrolled at trace time
        k = cute.arch.shuffle_sync_bfly(key, offset=offset)
        i = cute.arch.shuffle_sync_bfly(index, offset=offset)
        take = better(key, index, k, i)
        key = cutlass.select_(take, k, key)
        index = cutlass.select_(take, i, index)
        offset //= 2
    return key, index


@cute.jit
def warp_max(v):
    offset = WARP // 2
    while offset >= 1:
        v = cute.arch.fmax(v, cute.arch.shuffle_sync_bfly(v, offset=offset))
        offset //= 2
    return v


@cute.jit
def warp_top2(k1, v1, k2, v2):
    """The warp's two best (key, value) pairs, in every lane, from each lane's two best."""
    offset = WARP // 2
    while offset >= 1:
        p1 = cute.arch.shuffle_sync_bfly(k1, offset=offset)
        pv1 = cute.arch.shuffle_sync_bfly(v1, offset=offset)
        p2 = cute.arch.shuffle_sync_bfly(k2, offset=offset)
        pv2 = cute.arch.shuffle_sync_bfly(v2, offset=offset)
        mine = k1 >= p1  # equal keys hold equal values: either may lead
        n1, nv1 = cutlass.select_(mine, k1, p1), cutlass.select_(mine, v1, pv1)
        c1, cv1 = cutlass.select_(mine, k2, k1), cutlass.select_(mine, v2, v1)  # the runner-up's rivals
        c2, cv2 = cutlass.select_(mine, p1, p2), cutlass.select_(mine, pv1, pv2)
        first = c1 >= c2
        k2, v2 = cutlass.select_(first, c1, c2), cutlass.select_(first, cv1, cv2)
        k1, v1 = n1, nv1
        offset //= 2
    return k1, v1, k2, v2


class Selector:
    """The selection methods of the kernels that route (a mixin over a ``Selection`` config)."""

    @cute.jit
    def select_row(self, sel: SelectOperands, row, lane):
        """Scores, groups, top-k and weights of token ``row``; lanes 0 .. k-1 store pick 0 .. k-1."""
        n, k = self.lane_experts, self.top_k
        experts = self.experts
        first = lane * n
        logit = cute.make_rmem_tensor(cute.make_layout(n), Float32)
        score = cute.make_rmem_tensor(cute.make_layout(n), Float32)
        key = cute.make_rmem_tensor(cute.make_layout(n), Int32)
        row_at = sel.logits.iterator + row * experts
        nan = Int32(0)
        for j in cutlass.range_constexpr(n):
            logit[j] = Float32(float("-inf"))
            if first + j < experts:
                v = load_global_cg(row_at + first + j, 1)[0]  # other CTAs wrote it: read L2
                logit[j] = v
                nan = nan | cutlass.select_(v != v, Int32(1), Int32(0))
        row_nan = cute.arch.vote_any_sync(nan != 0)

        # 1. scores
        if cutlass.const_expr(self.scoring == "softmax"):
            top = Float32(float("-inf"))
            for j in cutlass.range_constexpr(n):
                top = cute.arch.fmax(top, logit[j])
            top = warp_max(top)
            total = Float32(0.0)
            for j in cutlass.range_constexpr(n):
                score[j] = Float32(0.0)
                if first + j < experts:
                    score[j] = cute.math.exp(logit[j] - top)
                total = total + score[j]
            total = warp_sum(total)
            for j in cutlass.range_constexpr(n):
                score[j] = score[j] / total
        elif cutlass.const_expr(self.scoring == "sigmoid"):
            for j in cutlass.range_constexpr(n):
                score[j] = Float32(1.0) / (Float32(1.0) + cute.math.exp(-logit[j]))
        elif cutlass.const_expr(self.scoring == "sqrt_softplus"):
            for j in cutlass.range_constexpr(n):
                v = logit[j]
                score[j] = cute.math.sqrt(cute.arch.fmax(v, Float32(0.0))
                                          + cute.math.log1p(cute.math.exp(-cute.math.abs(v))))
        else:  # topk_softmax, topk_sigmoid: the logits choose
            for j in cutlass.range_constexpr(n):
                score[j] = logit[j]

        # 2. choice values (the correction bias chooses only) and their keys; experts past E
        # never rank
        choice = cute.make_rmem_tensor(cute.make_layout(n), Float32)
        eligible = Int32(0)  # bit j: expert first + j may be chosen
        for j in cutlass.range_constexpr(n):
            choice[j] = score[j]
            key[j] = Int32(NONE_KEY)
            if first + j < experts:
                if cutlass.const_expr(self.correction_bias):
                    choice[j] = score[j] + sel.cbias[first + j].to(Float32)
                key[j] = order_key(choice[j])
                eligible = eligible | Int32(bit(j))

        # 3. groups: the topk_group best by the sum of their two best choice values
        if cutlass.const_expr(self.n_group > 1):
            size = self.group_size
            gkey = cute.make_rmem_tensor(cute.make_layout(self.n_group), Int32)
            for g in cutlass.range_constexpr(self.n_group):
                k1, k2 = Int32(NONE_KEY), Int32(NONE_KEY)
                v1, v2 = Float32(0.0), Float32(0.0)
                for j in cutlass.range_constexpr(n):
                    if (first + j) // size == g:  # implies first + j < E = n_group * size
                        kj, cj = key[j], choice[j]
                        lead = kj > k1
                        second = kj > k2
                        n2 = cutlass.select_(lead, k1, cutlass.select_(second, kj, k2))
                        nv2 = cutlass.select_(lead, v1, cutlass.select_(second, cj, v2))
                        k1 = cutlass.select_(lead, kj, k1)
                        v1 = cutlass.select_(lead, cj, v1)
                        k2 = n2
                        v2 = nv2
                k1, v1, k2, v2 = warp_top2(k1, v1, k2, v2)
                gkey[g] = order_key(v1 + v2)
            kept = Int32(0)  # bit g: group g is among the topk_group best
            for g in cutlass.range_constexpr(self.n_group):
                rank = Int32(0)
                for h in cutlass.range_constexpr(self.n_group):
                    if cutlass.const_expr(h < g):
                        rank = rank + cutlass.select_(gkey[h] >= gkey[g], Int32(1), Int32(0))
                    elif cutlass.const_expr(h > g):
                        rank = rank + cutlass.select_(gkey[h] > gkey[g], Int32(1), Int32(0))
                kept = kept | cutlass.select_(rank < self.topk_group, Int32(bit(g)), Int32(0))
            for j in cutlass.range_constexpr(n):
                group = (first + j) // size
                if ((kept >> group) & 1) == 0:
                    eligible = eligible & Int32(~bit(j))

        # 4. top_k rounds: the best eligible expert, best first; lane t keeps pick t
        my_id, my_value = Int32(0), Float32(0.0)
        for t in cutlass.range_constexpr(k):
            bk, bi = Int32(NONE_KEY), Int32(NO_INDEX)
            for j in cutlass.range_constexpr(n):
                take = (((eligible >> j) & 1) != 0) & (key[j] > bk)  # ascending j: ties keep the lower index
                bk = cutlass.select_(take, key[j], bk)
                bi = cutlass.select_(take, first + j, bi)
            bk, bi = warp_best(bk, bi)
            value = Float32(0.0)
            for j in cutlass.range_constexpr(n):
                mine = bi == first + j
                value = cutlass.select_(mine, score[j], value)
                eligible = cutlass.select_(mine, eligible & Int32(~bit(j)), eligible)
            value = cute.arch.shuffle_sync(value, offset=bi // n)
            if lane == t:
                my_id = bi
                my_value = value

        # 5. weights over lanes 0 .. k-1
        picked = lane < k
        w = my_value
        if cutlass.const_expr(self.scoring == "topk_softmax"):
            top = warp_max(cutlass.select_(picked, w, Float32(float("-inf"))))
            w = cute.math.exp(w - top)
            w = w / warp_sum(cutlass.select_(picked, w, Float32(0.0)))
        elif cutlass.const_expr(self.scoring == "topk_sigmoid"):
            w = Float32(1.0) / (Float32(1.0) + cute.math.exp(-w))
        if cutlass.const_expr(self.renormalize):
            w = w / warp_sum(cutlass.select_(picked, w, Float32(0.0)))
        w = w * sel.scaling
        if row_nan:
            w = Float32(float("nan"))
        if picked:
            if cutlass.const_expr(self.packed):
                box = cute.make_rmem_tensor(cute.make_layout(1), cutlass.BFloat16)
                box[0] = w.to(cutlass.BFloat16)  # round to nearest even, as pack_topk
                low = cute.recast_tensor(box, cutlass.Uint16)[0].to(Int32)
                sel.ids[row, lane] = (my_id << 16) | low
            else:
                sel.weights[row, lane] = w
                sel.ids[row, lane] = my_id
