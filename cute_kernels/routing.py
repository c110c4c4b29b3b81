"""How a Mixture-of-Experts router turns logits into its top-k experts: ``RoutingConfig``.

Plain Python (no torch), so presets and kernels can hold and compare it. The exact semantics
of every field are those of ``cute_kernels.reference.route``; in short, per token row:

    scores  = scoring(logits)                      # over all E experts
    choice  = scores + correction_bias             # only when correction_bias; for choosing only
    groups  = the topk_group best of n_group equal groups, a group's score being the sum of
              its two best choice values           # only when n_group > 1
    ids     = the top_k experts by choice among the kept groups' experts
    weights = scores[ids]                          # unbiased
    weights = weights / sum(weights)               # only when renormalize
    weights = weights * scaling

``topk_softmax`` and ``topk_sigmoid`` choose on the raw logits instead and score only the
chosen ones: softmax over the k chosen logits (gpt-oss), sigmoid of each (Llama-4).
"""

import math
from dataclasses import dataclass

SCORINGS = ("softmax", "sigmoid", "sqrt_softplus", "topk_softmax", "topk_sigmoid")
"""Scoring functions, see ``RoutingConfig.scoring``."""

MAX_TOP_K = 32


def _int_field(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class RoutingConfig:
    """One model's routing: how scores are made and which experts are chosen.

    scoring: ``"softmax"`` (softmax over all E logits: Qwen3-MoE, Mixtral), ``"sigmoid"``
        (DeepSeek-V3, Kimi, GLM, MiniMax), ``"sqrt_softplus"`` (sqrt(softplus(logit)):
        DeepSeek-V4), ``"topk_softmax"`` (top-k of the logits, then softmax over the k chosen:
        gpt-oss) or ``"topk_sigmoid"`` (top-k of the logits, then sigmoid of each: Llama-4).
    top_k: experts per token, 1..32.
    n_group, topk_group: DeepSeek's group-limited choice: the E experts form ``n_group``
        groups of E / n_group consecutive experts and only the ``topk_group`` best groups
        are chosen from (a group's score is the sum of its two best choice values). 1 and 1
        (the default) choose from all experts.
    renormalize: divide the chosen weights by their sum (``norm_topk_prob``).
    scaling: multiply the weights by this last (``routed_scaling_factor``); finite, > 0.
    correction_bias: the model adds a per-expert fp32 bias (DeepSeek's
        ``e_score_correction_bias``) to the scores for choosing only; the weights never see
        it. The bias tensor itself is an argument of ``route``.

    Construction checks the fields' types (TypeError) and every rule that does not depend
    on the number of experts (ValueError); ``check(num_experts)`` checks the rest. Both
    errors start with the field's name.

    The ``topk_*`` scorings take neither groups nor a correction bias: no model uses them,
    a group score over raw logits would not be DeepSeek's (which sums scores) and with a bias
    it would be unclear whether the k-way softmax sees biased logits. A gate bias that is
    part of the logits (gpt-oss) belongs to the router GEMM, not here.
    """

    scoring: str
    top_k: int
    n_group: int = 1
    topk_group: int = 1
    renormalize: bool = False
    scaling: float = 1.0
    correction_bias: bool = False

    def __post_init__(self):
        if not isinstance(self.scoring, str):
            raise TypeError(f"scoring: expected a str, got {type(self.scoring).__name__} {self.scoring!r}")
        for name in ("top_k", "n_group", "topk_group"):
            _int_field(name, getattr(self, name))
        for name in ("renormalize", "correction_bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__} "
                                f"{getattr(self, name)!r}")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)):
            raise TypeError(f"scaling: expected a float, got {type(self.scaling).__name__} {self.scaling!r}")
        object.__setattr__(self, "scaling", float(self.scaling))
        self._check_fields()
        # Computed once: a traced call (torch.compile) passes the text, and must not build it.
        object.__setattr__(self, "_text", ":".join([
            self.scoring, str(self.top_k), str(self.n_group), str(self.topk_group), str(int(self.renormalize)),
            repr(self.scaling), str(int(self.correction_bias))]))

    def _check_fields(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring: unknown {self.scoring!r} (expected one of {', '.join(SCORINGS)})")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k: must be in 1..{MAX_TOP_K}, got {self.top_k}")
        if self.n_group < 1:
            raise ValueError(f"n_group: must be >= 1, got {self.n_group}")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"topk_group: must be in 1..n_group={self.n_group}, got {self.topk_group}")
        if not (math.isfinite(self.scaling) and self.scaling > 0):
            raise ValueError(f"scaling: must be finite and > 0, got {self.scaling}")
        if self.scoring.startswith("topk_"):
            if self.n_group != 1:
                raise ValueError(f"n_group: {self.scoring} chooses from all experts; must be 1, got {self.n_group}")
            if self.correction_bias:
                raise ValueError(f"correction_bias: {self.scoring} takes no correction bias, got True")

    def check(self, num_experts):
        """Raises unless this routing is valid for ``num_experts`` experts (errors name the field).

        Rules: top_k <= E; E % n_group == 0; with n_group > 1 every group holds at least two
        experts (a group's score is the sum of its two best); top_k <= topk_group * E / n_group
        (the kept groups hold enough experts); plus those checked at construction.
        """
        _int_field("num_experts", num_experts)
        if num_experts < 1:
            raise ValueError(f"num_experts: must be >= 1, got {num_experts}")
        self._check_fields()
        if self.top_k > num_experts:
            raise ValueError(f"top_k: {self.top_k} > number of experts {num_experts}")
        if num_experts % self.n_group:
            raise ValueError(f"n_group: {self.n_group} does not divide the number of experts {num_experts}")
        size = num_experts // self.n_group
        if self.n_group > 1 and size < 2:
            raise ValueError(f"n_group: {self.n_group} groups of {num_experts} experts hold {size} each; "
                             "a group's score needs two")
        if self.top_k > self.topk_group * size:
            raise ValueError(f"top_k: {self.top_k} > the {self.topk_group * size} experts of "
                             f"topk_group={self.topk_group} groups of {size}")

    def to_text(self) -> str:
        """The config as one string (a custom-op argument under torch.compile); ``from_text``
        reads it back exactly."""
        return self._text

    @classmethod
    def from_text(cls, text: str) -> "RoutingConfig":
        scoring, top_k, n_group, topk_group, renormalize, scaling, bias = text.split(":")
        return cls(scoring, int(top_k), int(n_group), int(topk_group), renormalize == "1", float(scaling),
                   bias == "1")
