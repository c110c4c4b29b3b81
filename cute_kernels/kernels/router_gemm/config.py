"""Router GEMM configurations: the static parameters of one specialisation, the sizes they
derive, and the shared-memory plan that both the host (budget, launch size) and the kernel
(allocation) read. Plain Python: no DSL, no torch.

``RouterGemm``: logits[M, E] = x[M, H] @ W[E, H]^T (+ bias), fp32 accumulation.
``NormRouterGemm``: the same with the RMSNorm of x fused in (``cute_kernels.norm_router_gemm``).
``RouterTopk`` / ``NormRouterTopk``: either, with scoring and top-k selection fused after it
(``cute_kernels.router_topk``, ``norm_router_topk``); ``Route``: the selection alone, from logits
in memory (``cute_kernels.route``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...routing import RoutingConfig
from ..common import WARP, WIDTHS, Slot, plan_bytes

VARIANTS = ("dot", "mma")
REDUCES = ("cluster", "global")
# int32 arrival counters at the head of a global-reduce workspace, one per output tile; fp32
# partial tiles follow. The counters are zero between launches (the last CTA of a tile resets
# its own), so the region has a fixed size and is zeroed once, when the workspace is made.
WORKSPACE_COUNTERS = 8192
VEC_BYTES = 16
TMA_ALIGN = 128  # bytes: the shared-memory address of every TMA tile
MMA_K = 32  # columns one warp consumes per step: two m16n8k16 MMAs
# (x, weight) dtypes the tensor cores take. fp32 weights enter as three bf16 parts whose sum is
# the weight exactly (``ptx.split_bf16``), so the products are those of the fp32 weights.
MMA_DTYPES = (("bfloat16", "bfloat16"), ("float16", "float16"), ("bfloat16", "float32"))


@dataclass(frozen=True)
class RouterGemm:
    x_dtype: str  # "bfloat16" | "float16" | "float32"
    w_dtype: str  # "bfloat16" | "float16" | "float32"
    out_dtype: str  # "float32" | "bfloat16"
    bias_dtype: str | None  # None (no bias) or a float dtype name
    variant: str  # "dot" | "mma"
    e_tile: int  # experts per CTA
    m_tile: int  # tokens per CTA
    split_k: int  # CTAs along H, each taking 1/split_k of it
    stages: int  # shared-memory stages: at least the k tiles of one CTA's share of H
    pdl: bool
    consumer_warps: int = 4
    # How split_k > 1 CTAs combine their partial tiles: "cluster" (the CTAs form a thread-block
    # cluster and send each part of their tile to the CTA that finishes it, through DSMEM) or
    # "global" (each writes its tile to a workspace; the last to arrive at the tile's counter
    # sums them).
    reduce: str = "cluster"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {self.variant!r}")
        if self.variant == "mma":
            if (self.x_dtype, self.w_dtype) not in MMA_DTYPES:
                raise ValueError("the mma variant needs x and weight both bfloat16 or both float16, or bfloat16 x "
                                 "with float32 weights")
            if self.e_tile % 16 or self.m_tile % 8:
                raise ValueError("the mma variant tiles experts by 16 and tokens by 8")
        if self.e_tile < 1 or self.consumer_warps < 1:
            raise ValueError("e_tile and consumer_warps must be >= 1")
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}; got {self.reduce!r}")
        if self.reduce == "cluster" and not 1 <= self.split_k <= 8:
            raise ValueError("split_k across a cluster is a portable cluster size: 1 to 8")
        if not 1 <= self.split_k <= 64:
            raise ValueError("split_k must be 1 to 64")

    @property
    def uses_cluster(self) -> bool:
        return self.split_k > 1 and self.reduce == "cluster"

    @property
    def uses_workspace(self) -> bool:
        return self.split_k > 1 and self.reduce == "global"

    @property
    def has_norm(self) -> bool:
        return False

    @property
    def selects(self) -> bool:
        """Whether the CTAs go on to choose each token's top-k experts (``RouterTopk``)."""
        return False

    def workspace_ints(self, m: int, e: int) -> int:
        """int32 words of workspace a launch needs (0 without a global reduction): the counter
        region, then one fp32 partial tile per (output tile, split rank)."""
        if not self.uses_workspace:
            return 0
        return WORKSPACE_COUNTERS + self.output_tiles(m, e) * self.split_k * self.m_tile * self.e_tile

    def output_tiles(self, m: int, e: int) -> int:
        return -(-e // self.e_tile) * -(-m // self.m_tile)

    @property
    def k_tile(self) -> int:
        """Columns of H per stage: a 16-byte chunk per lane (dot) or 32 columns per warp (mma)."""
        if self.variant == "mma":
            return MMA_K * self.consumer_warps
        return WARP * self.w_vec

    @property
    def w_vec(self) -> int:
        return VEC_BYTES * 8 // WIDTHS[self.w_dtype]

    @property
    def w_parts(self) -> int:
        """bf16 parts each weight enters the tensor cores as: 3 for fp32 weights (24 significant
        bits), else 1."""
        return 3 if self.w_dtype == "float32" else 1

    @property
    def threads(self) -> int:
        return (self.consumer_warps + 1) * WARP  # + the producer warp

    @property
    def red_vec(self) -> int:
        """fp32 values the epilogue moves per access: the widest of 4, 2, 1 dividing e_tile."""
        return 4 if self.e_tile % 4 == 0 else 2 if self.e_tile % 2 == 0 else 1

    def k_tiles_per_cta(self, h: int) -> int:
        return -(-(-(-h // self.k_tile)) // self.split_k)

    def holds_share(self, h: int) -> bool:
        """Every k tile of a CTA's share of H has its own stage (the kernel never reuses one)."""
        return self.stages >= self.k_tiles_per_cta(h)

    @property
    def stage_bytes(self) -> int:
        """Bytes one stage's barrier expects by TMA: a W tile and an x tile."""
        return self.k_tile * (self.e_tile * WIDTHS[self.w_dtype] + self.m_tile * WIDTHS[self.x_dtype]) // 8

    @property
    def tile_vecs(self) -> int:
        """``red_vec``-float vectors in one output tile: the unit of the reduction and the store."""
        return self.m_tile * self.e_tile // self.red_vec

    @property
    def owned_vecs(self) -> int:
        """Across a cluster, CTA r finalises vectors r, r + split_k, ...: at most this many."""
        return -(-self.tile_vecs // self.split_k)

    @property
    def store_iters(self) -> int:
        """Vectors of the output tile one consumer thread finalises, at most (``store_slot``)."""
        step = self.consumer_warps * WARP * (self.split_k if self.uses_cluster else 1)
        return -(-self.tile_vecs // step)

    def smem_plan(self) -> list[Slot]:
        """Every shared-memory allocation, in the order the kernel makes them: the stages' TMA
        tiles (W, then x), the consumer warps' fp32 partial tiles, one mbarrier per stage; with
        the global reduction the flag saying whether this CTA finishes the tile; across a
        cluster the inbox of the peers' partials and its mbarrier."""
        k, st = self.k_tile, self.stages
        plan = [Slot("w", self.w_dtype, (self.e_tile, k, st), (k, 1, self.e_tile * k), TMA_ALIGN),
                Slot("x", self.x_dtype, (self.m_tile, k, st), (k, 1, self.m_tile * k), TMA_ALIGN)]
        plan += self.norm_plan()
        tile = self.m_tile * self.e_tile
        plan += [Slot("red", "float32", (self.consumer_warps, self.m_tile, self.e_tile), (tile, self.e_tile, 1), 16),
                 Slot("full", "int64", (st,), (1,), 8)]
        if self.uses_workspace or self.selects:
            plan.append(Slot("last", "int32", (1,), (1,), 4))
        plan += self.select_plan()
        if self.uses_cluster:
            owned = self.owned_vecs * self.red_vec
            plan.append(Slot("inbox", "float32", (self.split_k, owned), (owned, 1), 16))
            if self.has_norm:
                plan.append(Slot("inbox_stats", "float32", (self.split_k, self.m_tile), (self.m_tile, 1), 16))
            plan.append(Slot("inbox_full", "int64", (1,), (1,), 8))
        return plan

    def norm_plan(self) -> list[Slot]:
        return []

    def select_plan(self) -> list[Slot]:
        return []

    def smem_bytes(self) -> int:
        # + TMA_ALIGN: the dynamic shared memory's base address is only 16-byte aligned for sure.
        return plan_bytes(self.smem_plan()) + TMA_ALIGN


@dataclass(frozen=True, kw_only=True)
class NormRouterGemm(RouterGemm):
    """RMSNorm fused into the router GEMM: ``normed = x * r * norm_weight`` and
    ``logits = r * (x * norm_weight) @ W^T`` with ``r = 1 / sqrt(mean(x^2) + eps)``, all in
    fp32, so the logits use the unrounded normed values. The sum of squares rides the consumer
    loop and the split reduction; each CTA's x (and norm-weight) tiles stay in their stages (one
    per k tile of its share, as in the router) to write normed x once r is known."""

    norm_dtype: str  # the norm weight's dtype

    def __post_init__(self):
        super().__post_init__()
        if self.bias_dtype is not None:
            raise ValueError("the fused norm runs without bias")
        if self.variant == "mma" and not self.x_dtype == self.norm_dtype == self.w_dtype == "bfloat16":
            raise ValueError("the fused norm's mma variant needs bf16 x, norm weight and gate weight "
                             "(x * norm_weight must split exactly into two bf16 halves)")
        if WIDTHS[self.x_dtype] != 16:
            raise ValueError("the fused norm takes bfloat16 or float16 x")
        if self.uses_workspace:
            raise ValueError("the fused norm splits H across a cluster only: every CTA needs the row's rms "
                             "to write its columns of normed x")

    @property
    def has_norm(self) -> bool:
        return True

    @property
    def stage_bytes(self) -> int:
        """A W tile, an x tile and a norm-weight tile."""
        return super().stage_bytes + self.k_tile * WIDTHS[self.norm_dtype] // 8

    @property
    def norm_slot(self) -> int:
        """Elements from one norm-weight tile to the next: a TMA destination must be 128-byte
        aligned, and with an odd number of mma warps one row of a k tile is an odd multiple of
        64 bytes."""
        width = WIDTHS[self.norm_dtype] // 8
        return -(-self.k_tile * width // TMA_ALIGN) * TMA_ALIGN // width

    def norm_plan(self) -> list[Slot]:
        """The norm weight's TMA tiles (one per stage) and the per-row statistics: [0, m] this
        CTA's partial sum of x[m, :]^2, [1, m] the row's 1 / rms, [2 + w, m] consumer warp w's
        share of [0, m]."""
        k = self.k_tile
        return [Slot("norm_w", self.norm_dtype, (1, k, self.stages), (k, 1, self.norm_slot), TMA_ALIGN),
                Slot("stats", "float32", (2 + self.consumer_warps, self.m_tile), (self.m_tile, 1), 16)]


MAX_EXPERTS = 1024  # a lane holds E / 32 of a token's experts in registers while it selects
MAX_GROUPS = 32


@dataclass(frozen=True, kw_only=True)
class Selection:
    """How a token's top-k experts are chosen: the fields of ``routing.RoutingConfig`` (its
    ``scaling`` is a run-time argument: no recompile per model) and the experts E, which the
    selection needs at compile time (a lane holds ``lane_experts`` of them). ``packed``: the
    result is ``pack_topk``'s int32 ``(id << 16) | bits(bf16(weight))`` instead of weights and ids."""

    experts: int
    scoring: str
    top_k: int
    n_group: int = 1
    topk_group: int = 1
    renormalize: bool = False
    correction_bias: bool = False
    packed: bool = False

    def check_selection(self):
        self.routing.check(self.experts)  # ValueError naming the field
        if self.experts > MAX_EXPERTS or self.n_group > MAX_GROUPS:
            raise ValueError(f"the fused selection takes up to {MAX_EXPERTS} experts in up to {MAX_GROUPS} groups")
        if self.packed and self.experts > 32768:
            raise ValueError("packed ids keep 15 bits: E must be at most 32768")

    @property
    def routing(self) -> RoutingConfig:
        return RoutingConfig(self.scoring, self.top_k, self.n_group, self.topk_group, self.renormalize, 1.0,
                             self.correction_bias)

    @property
    def lane_experts(self) -> int:
        """Experts of a token each lane of a selecting warp holds: lane l, [l * V, (l + 1) * V)."""
        return -(-self.experts // WARP)

    @property
    def group_size(self) -> int:
        return self.experts // self.n_group


@dataclass(frozen=True, kw_only=True)
class RouterTopk(Selection, RouterGemm):
    """The router GEMM, then each token's top-k: every CTA stores its fp32 logits (to the
    caller's ``logits_out``, else to a workspace; L2 either way), counts itself in at its token
    tile's arrival counter, and the last CTA of a token tile, which then sees every expert's
    logit, selects for the tile's tokens (one warp per token)."""

    def __post_init__(self):
        super().__post_init__()
        if self.out_dtype != "float32":
            raise ValueError("the selection reads fp32 logits: out_dtype must be float32")
        if self.uses_workspace:
            raise ValueError("the selection counts the CTAs that store logits: split H across a cluster")
        self.check_selection()

    @property
    def selects(self) -> bool:
        return True

    @property
    def arrivals(self) -> int:
        """CTAs that store part of a token tile's logits: every CTA of its expert tiles."""
        return -(-self.experts // self.e_tile) * (self.split_k if self.uses_cluster else 1)

    def select_plan(self) -> list[Slot]:
        """The correction bias, staged once per CTA before the grid-dependency wait."""
        return [Slot("cbias", "float32", (self.experts,), (1,), 16)] if self.correction_bias else []

    def workspace_ints(self, m: int, e: int) -> int:
        """The token tiles' arrival counters, then room for the fp32 logits when the caller
        gives no ``logits_out``."""
        return WORKSPACE_COUNTERS + m * e


@dataclass(frozen=True, kw_only=True)
class NormRouterTopk(NormRouterGemm, RouterTopk):
    """The fused RMSNorm + router GEMM, then each token's top-k (as ``RouterTopk``)."""


@dataclass(frozen=True)
class Route(Selection):
    """Scoring and top-k from fp32 logits in memory: one warp per token, ``warps`` per CTA."""

    pdl: bool
    warps: int = 4

    def __post_init__(self):
        self.check_selection()
