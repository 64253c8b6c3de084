"""``--device-map auto`` (accelerate): tiny-qwen2 placed with a CPU memory limit that offloads most of it to
disk gives the same sweep, per (variant, prompt), for every site kind on every layer (offloaded layers
included) as the model in one piece; a weight changed in the offload folder changes the result, so the
offloaded layers really run from there; bad --max-memory entries fail before any load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlas_core import AtlasError
from atlas_core.interventions import Ablate, Variant
from atlas_core.models import load
from atlas_core.models.placement import parse_max_memory, place
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.runner import Runner
from atlas_core.sites import Site

pytest.importorskip("accelerate", reason='the multidevice extra: pip install -e ".[multidevice]"')

PROMPTS = ["The capital of Italy is ", "1 + 2 =", "def f(x):", "copy: a b c ->"]


def variants():
    out = [
        Variant(f"{kind}/{mode}/L{layer}", (Ablate(Site(kind, layer), mode),))
        for kind in ("resid", "attn", "mlp")
        for mode in ("zero", "mean", "resample")
        for layer in range(4)
    ]
    return out + [
        Variant(f"head/L{layer}H{h}", (Ablate(Site("head", layer, h), "zero"),)) for layer in range(4) for h in (0, 3)
    ]


@pytest.fixture
def whole_and_split(tmp_path):
    whole = load("tiny-qwen2", device="cpu", dtype="float32")
    split = load("tiny-qwen2", device="cpu", dtype="float32")
    size = sum(p.numel() * p.element_size() for p in split.model.parameters())
    placed = place(split.model, "auto", max_memory={"cpu": size // 2}, offload_dir=str(tmp_path / "offload"))
    return whole, split, placed


def test_split_model_sweeps_exactly_like_the_whole(whole_and_split):
    whole, split, placed = whole_and_split
    on_disk = sorted(k for k, d in placed.device_map.items() if d == "disk")
    assert any(k.startswith("model.layers.") for k in on_disk), placed.device_map
    assert {p.device.type for p in split.model.parameters()} == {"cpu", "meta"}
    vs = variants()
    a = Runner(whole.model, whole.tokenizer, PROMPTS).sweep(vs, targets=[5, 6, 7, 8])
    b = Runner(split.model, split.tokenizer, PROMPTS).sweep(vs, targets=[5, 6, 7, 8])
    assert (a.kl > 0).all()  # every site, offloaded layers included, moved the output: the hooks fired
    np.testing.assert_allclose(b.kl, a.kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.target_prob, a.target_prob, rtol=1e-5, atol=1e-7)
    assert (a.argmax == b.argmax).all()


def test_an_offloaded_weight_changed_on_disk_is_caught(whole_and_split):
    whole, split, placed = whole_and_split
    last = Path(placed.offload_dir) / "model.layers.3.mlp.down_proj.weight.dat"
    assert last.is_file(), sorted(p.name for p in Path(placed.offload_dir).iterdir())[:10]
    w = np.memmap(last, dtype=np.float32, mode="r+")
    w[:] *= 1.5
    w.flush()
    del w
    vs = variants()
    a = Runner(whole.model, whole.tokenizer, PROMPTS).sweep(vs)
    b = Runner(split.model, split.tokenizer, PROMPTS).sweep(vs)
    with pytest.raises(AssertionError, match="Mismatched elements") as err:
        np.testing.assert_allclose(b.kl, a.kl, rtol=1e-5, atol=1e-7)
    print(next(line for line in str(err.value).splitlines() if "Mismatched" in line))


def test_max_memory_parsed_and_bad_entries_refused(tmp_path):
    assert parse_max_memory("0=20GiB, cuda:1=20GiB,cpu=60GiB") == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    with pytest.raises(AtlasError, match="is not DEVICE=SIZE"):
        parse_max_memory("cpu:60GiB")
    with pytest.raises(AtlasError, match="use a GPU index"):
        parse_max_memory("tpu=1GiB")
    with pytest.raises(AtlasError, match="is not DEVICE=SIZE"):
        run_plan(
            RunPlan(
                model="tiny-qwen2",
                experiments=["clean"],
                profile="smoke",
                out=tmp_path / "r",
                device_map="auto",
                max_memory="cpu=lots",
                progress=False,
            )
        )
    assert not (tmp_path / "r").exists()
