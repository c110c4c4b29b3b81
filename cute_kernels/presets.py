"""Model presets: the routing shapes and dtypes of the MoE models the kernels are tuned for.

Numbers come from each model's published Hugging Face config.json. ``moe_intermediate_size``
is the per-expert FFN width, i.e. the H of ``silu_mul_quant_fp8`` (its input is [T, 2H]).
``gate_dtype`` is the router weight dtype as the model runs it; ``gate_bias`` is a bias added
to the logits (DeepSeek-style score-correction biases only steer top-k selection, so they do
not count). ``norm_router`` marks models that fuse RMSNorm into the router (DeepSeek-V4).
``routing`` is how the model turns logits into its top-k (see ``cute_kernels.routing``); its
``top_k`` is the preset's and it is valid for ``num_experts`` (checked at construction). Each
names where its values come from; "assumed" marks what could not be read from a published
config. A ``routed_scaling_factor`` that a serving stack applies to the MoE output instead is the
same factor (the output is linear in the weights).
"""

from dataclasses import dataclass, field

from .routing import RoutingConfig


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    hidden_size: int
    num_experts: int
    top_k: int
    moe_intermediate_size: int
    gate_dtype: str = "bfloat16"
    gate_bias: bool = False
    logits_dtype: str = "float32"
    norm_router: bool = False
    routing: RoutingConfig = field(kw_only=True)

    def __post_init__(self):
        if not isinstance(self.routing, RoutingConfig):
            raise TypeError(f"routing: expected a RoutingConfig, got {type(self.routing).__name__}")
        if self.routing.top_k != self.top_k:
            raise ValueError(f"routing: top_k {self.routing.top_k} != the preset's top_k {self.top_k}")
        self.routing.check(self.num_experts)


_P = Preset
_R = RoutingConfig
# DeepSeek-V3-style routing: sigmoid scores, e_score_correction_bias for choosing (noaux_tc),
# norm_topk_prob, routed_scaling_factor; n_group / topk_group as published.
_ALL = [
    # config.json: scoring_func sigmoid, topk_method noaux_tc, n_group 8, topk_group 4,
    # norm_topk_prob true, routed_scaling_factor 2.5 (read from copies of DeepSeek's inference
    # config: n_expert_groups 8, n_limited_groups 4, route_scale 2.5); modelling: transformers
    # deepseek_v3 DeepseekV3TopkRouter (group score = sum of the two best biased scores).
    _P("deepseek-v3", "deepseek-ai/DeepSeek-V3", 7168, 256, 8, 2048,
       routing=_R("sigmoid", 8, n_group=8, topk_group=4, renormalize=True, scaling=2.5, correction_bias=True)),
    # config.json (model_type kimi_k2, DeepseekV3 modelling): sigmoid, noaux_tc, n_group 1,
    # topk_group 1, norm_topk_prob true, routed_scaling_factor 2.827 (read from copies of the
    # K2 / K2.5 text config).
    _P("kimi-k2", "moonshotai/Kimi-K2-Instruct", 7168, 384, 8, 2048,
       routing=_R("sigmoid", 8, renormalize=True, scaling=2.827, correction_bias=True)),
    # gate_dtype for both V4 models: the Flash checkpoint stores the gate as bf16 and serving
    # stacks run it bf16 x bf16 -> fp32; assumed the same for Pro.
    # Routing, both V4 models: scoring_func sqrtsoftplus, topk_method noaux_tc (a correction bias
    # per layer: gate.bias in the checkpoint), norm_topk_prob true, no n_group / topk_group
    # (vllm deepseek_v4.py: fused_topk_bias, no grouping). The first num_hash_layers (3) layers
    # route by a token-id hash table instead: not this op. routed_scaling_factor 2.5 for Pro is
    # assumed from secondary sources (its inference config's route_scale as quoted by third
    # parties); Pro's config.json was not read.
    _P("deepseek-v4-pro", "deepseek-ai/DeepSeek-V4-Pro", 7168, 384, 6, 3072, norm_router=True,
       routing=_R("sqrt_softplus", 6, renormalize=True, scaling=2.5, correction_bias=True)),
    # Looked up: hidden 4096, 256 routed experts, top-6, moe_intermediate_size 2048.
    # Routing from a verbatim copy of config.json: routed_scaling_factor 1.5 (see V4-Pro above).
    _P("deepseek-v4-flash", "deepseek-ai/DeepSeek-V4-Flash", 4096, 256, 6, 2048, norm_router=True,
       routing=_R("sqrt_softplus", 6, renormalize=True, scaling=1.5, correction_bias=True)),
    # Latent MoE: routed experts see a 3584-wide projection (routed_expert_hidden_size).
    # Routing (text_config, kimi_linear modelling: vllm kimi_linear.py KimiMoE): moe_router_activation_func
    # sigmoid, e_score_correction_bias, num_expert_group 1, topk_group 1, moe_renormalize true,
    # routed_scaling_factor 1.0 (applied to the MoE output); from third-party copies of
    # config.json pinned to a revision, not the file itself.
    _P("kimi-k3", "moonshotai/Kimi-K3", 7168, 896, 16, 3072,
       routing=_R("sigmoid", 16, renormalize=True, scaling=1.0, correction_bias=True)),
    # gpt-oss (transformers GptOssTopKRouter): logits = x @ W.T + b (the gate bias, gate_bias),
    # top-k of the logits, softmax over the k chosen; no renormalization, no scaling. The model
    # rounds its logits to bf16 (logits_dtype); this op routes from fp32 logits.
    _P("gpt-oss-120b", "openai/gpt-oss-120b", 2880, 128, 4, 2880, gate_bias=True, logits_dtype="bfloat16",
       routing=_R("topk_softmax", 4)),
    _P("gpt-oss-20b", "openai/gpt-oss-20b", 2880, 32, 4, 2880, gate_bias=True, logits_dtype="bfloat16",
       routing=_R("topk_softmax", 4)),
    # config.json: scoring_func sigmoid, use_routing_bias true (e_score_correction_bias), no
    # routed_scaling_factor; vllm minimax_m2.py MiniMaxM2MoE: renormalize=True, fp32 gate.
    _P("minimax-m2", "MiniMaxAI/MiniMax-M2", 3072, 256, 8, 1536, gate_dtype="float32",
       routing=_R("sigmoid", 8, renormalize=True, correction_bias=True)),
    # text_config: scoring_func sigmoid, use_routing_bias true, routed_scaling_factor 2.0 (from
    # third-party copies of config.json); vllm minimax_m3 model MiniMaxM3MoE: renormalize=True,
    # not group-routed, the scaling applied to the MoE output.
    _P("minimax-m3", "MiniMaxAI/MiniMax-M3", 6144, 128, 4, 3072, gate_dtype="float32",
       routing=_R("sigmoid", 4, renormalize=True, scaling=2.0, correction_bias=True)),
    # transformers GlmMoeDsaConfig (checkpoint zai-org/GLM-5): n_group 1, topk_group 1,
    # norm_topk_prob true, routed_scaling_factor 2.5; config.json: scoring_func sigmoid,
    # topk_method noaux_tc. Router: the DeepSeek-V3 one (Glm4MoeTopkRouter).
    _P("glm-5", "zai-org/GLM-5", 6144, 256, 8, 2048,
       routing=_R("sigmoid", 8, renormalize=True, scaling=2.5, correction_bias=True)),
    # Megatron-Bridge's GLM-4.5 doc and slime's GLM-4.5-355B recipe: sigmoid with expert bias,
    # top-8, scaling 2.5, no group-limited routing; n_group 1, topk_group 1 and norm_topk_prob
    # true are assumed from GLM-4.5-Air's config.json (same family; this one's not read).
    # Router: transformers Glm4MoeTopkRouter (= DeepseekV3TopkRouter).
    _P("glm-4.5", "zai-org/GLM-4.5", 5120, 160, 8, 1536,
       routing=_R("sigmoid", 8, renormalize=True, scaling=2.5, correction_bias=True)),
    # Qwen3-MoE (transformers Qwen3MoeSparseMoeBlock): softmax over all experts in fp32, top-k,
    # renormalized when norm_topk_prob; no bias, no scaling. norm_topk_prob true for both: from
    # the published configs as recalled (not read here), matching slime's Megatron recipes
    # (softmax after top-k, which is the renormalized softmax).
    _P("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B", 4096, 128, 8, 1536,
       routing=_R("softmax", 8, renormalize=True)),
    _P("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 2048, 128, 8, 768,
       routing=_R("softmax", 8, renormalize=True)),
    # transformers Qwen3NextConfig (checkpoint Qwen3-Next-80B-A3B-Instruct): 512 experts, top-10,
    # norm_topk_prob true; softmax routing as Qwen3-MoE (the shared expert has its own gate).
    _P("qwen3-next", "Qwen/Qwen3-Next-80B-A3B-Instruct", 2048, 512, 10, 512,
       routing=_R("softmax", 10, renormalize=True)),
    # transformers Llama4TextMoe / vllm llama4 custom routing: top-k of the logits, then sigmoid
    # of the chosen ones; no renormalization, no scaling.
    _P("llama-4-maverick", "meta-llama/Llama-4-Maverick-17B-128E-Instruct", 5120, 128, 1, 8192,
       routing=_R("topk_sigmoid", 1)),
    # transformers MixtralSparseMoeBlock: softmax over all experts, top-2, divided by their sum.
    _P("mixtral-8x7b", "mistralai/Mixtral-8x7B-Instruct-v0.1", 4096, 8, 2, 14336,
       routing=_R("softmax", 2, renormalize=True)),
]

PRESETS = {p.name: p for p in _ALL}


def get(name):
    """The preset called ``name``; ValueError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None
