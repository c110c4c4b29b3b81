"""Model presets: the routing shapes and dtypes of the MoE models the kernels are tuned for.

Numbers come from each model's published Hugging Face config.json. ``moe_intermediate_size``
is the per-expert FFN width, i.e. the H of ``silu_mul_quant_fp8`` (its input is [T, 2H]).
``gate_dtype`` is the router weight dtype as the model runs it; ``gate_bias`` is a bias added
to the logits (DeepSeek-style score-correction biases only steer top-k selection, so they do
not count). ``norm_router`` marks models that fuse RMSNorm into the router (DeepSeek-V4).
"""

from dataclasses import dataclass


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


_P = Preset
_ALL = [
    _P("deepseek-v3", "deepseek-ai/DeepSeek-V3", 7168, 256, 8, 2048),
    _P("kimi-k2", "moonshotai/Kimi-K2-Instruct", 7168, 384, 8, 2048),
    # gate_dtype for both V4 models: the Flash checkpoint stores the gate as bf16 and serving
    # stacks run it bf16 x bf16 -> fp32; assumed the same for Pro.
    _P("deepseek-v4-pro", "deepseek-ai/DeepSeek-V4-Pro", 7168, 384, 6, 3072, norm_router=True),
    # Looked up: hidden 4096, 256 routed experts, top-6, moe_intermediate_size 2048.
    _P("deepseek-v4-flash", "deepseek-ai/DeepSeek-V4-Flash", 4096, 256, 6, 2048, norm_router=True),
    # Latent MoE: routed experts see a 3584-wide projection (routed_expert_hidden_size).
    _P("kimi-k3", "moonshotai/Kimi-K3", 7168, 896, 16, 3072),
    _P("gpt-oss-120b", "openai/gpt-oss-120b", 2880, 128, 4, 2880, gate_bias=True, logits_dtype="bfloat16"),
    _P("gpt-oss-20b", "openai/gpt-oss-20b", 2880, 32, 4, 2880, gate_bias=True, logits_dtype="bfloat16"),
    _P("minimax-m2", "MiniMaxAI/MiniMax-M2", 3072, 256, 8, 1536, gate_dtype="float32"),
    _P("minimax-m3", "MiniMaxAI/MiniMax-M3", 6144, 128, 4, 3072, gate_dtype="float32"),
    _P("glm-5", "zai-org/GLM-5", 6144, 256, 8, 2048),
    _P("glm-4.5", "zai-org/GLM-4.5", 5120, 160, 8, 1536),
    _P("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B", 4096, 128, 8, 1536),
    _P("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 2048, 128, 8, 768),
    _P("qwen3-next", "Qwen/Qwen3-Next-80B-A3B-Instruct", 2048, 512, 10, 512),
    _P("llama-4-maverick", "meta-llama/Llama-4-Maverick-17B-128E-Instruct", 5120, 128, 1, 8192),
    _P("mixtral-8x7b", "mistralai/Mixtral-8x7B-Instruct-v0.1", 4096, 8, 2, 14336),
]

PRESETS = {p.name: p for p in _ALL}


def get(name):
    """The preset called ``name``; ValueError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None
