"""``--device-map auto`` (accelerate): tiny-qwen2 placed with a CPU memory limit that offloads most of it to
disk gives the same sweep, per (variant, prompt), for every site kind on every layer (offloaded layers
included) as the model in one piece; a weight changed in the offload folder changes the result, so the
offloaded layers really run from there; bad --max-memory entries fail before any load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atlas_core import AtlasError
from atlas_core.interventions import Ablate, Variant
from atlas_core.models import load
from atlas_core.models.placement import parse_max_memory, place
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore
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
    assert parse_max_memory("cpu=362880B,disk=4096") == {
        "cpu": 362880,
        "disk": 4096,
    }  # bytes: ints, as accelerate reads them
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


# -- LoRA on a placed model ------------------------------------------------------------------------------------

LORA_RUN = ["--model", "tiny-qwen2", "--profile", "smoke", "--no-report"]
LORA_EXPERIMENTS = "clean,lora_training,transfer,adapter_ablation"


def half_of_tiny() -> str:
    """A CPU budget of half tiny-qwen2's weights: accelerate offloads its decoder layers to disk."""
    lm = load("tiny-qwen2", device="cpu", dtype="float32")
    return f"cpu={sum(p.numel() * p.element_size() for p in lm.model.parameters()) // 2}B"


def test_an_adapter_on_a_placed_model_leaves_its_placement_as_it_was(whole_and_split, tmp_path):
    """New and saved adapters on the offloaded model: initialised as on the whole model (the same seeded values),
    loaded where each layer runs, and on leaving the block every placement hook and offloaded weight is back,
    so the base model sweeps as before."""
    from atlas_core.adapters_lora import attached_adapter, new_adapter, save_adapter, spec_for

    whole, split, _ = whole_and_split
    hooks = {name: getattr(m, "_hf_hook", None) for name, m in split.model.named_modules()}
    weights = {name: p for name, p in split.model.named_parameters()}
    assert any(p.device.type == "meta" for p in weights.values())
    before = Runner(split.model, split.tokenizer, PROMPTS).sweep(variants()[:6])
    with (
        new_adapter(whole.model, spec_for(whole.model), 0) as a,
        new_adapter(split.model, spec_for(split.model), 0) as b,
    ):
        la = {n: p for n, p in a.named_parameters() if "lora_" in n}
        lb = {n: p for n, p in b.named_parameters() if "lora_" in n}
        assert la.keys() == lb.keys() and {p.device.type for p in lb.values()} == {"cpu"}
        assert all(torch.equal(la[n], lb[n]) for n in la)
        with torch.no_grad():
            for p in la.values():
                p.add_(0.05)
        save_adapter(a, tmp_path / "adapter", {"key": "test"})
    with (
        attached_adapter(whole.model, tmp_path / "adapter") as a,
        attached_adapter(split.model, tmp_path / "adapter") as b,
    ):
        ra = Runner(a, whole.tokenizer, PROMPTS).clean_logprobs
        rb = Runner(b, split.tokenizer, PROMPTS).clean_logprobs
        torch.testing.assert_close(rb, ra, rtol=1e-5, atol=1e-6)
    base = Runner(whole.model, whole.tokenizer, PROMPTS).clean_logprobs
    assert not torch.allclose(ra, base, atol=1e-3)  # the adapter moved the output: it was loaded, not left at zero
    assert {name: getattr(m, "_hf_hook", None) for name, m in split.model.named_modules()} == hooks
    now = dict(split.model.named_parameters())
    # accelerate swaps an offloaded weight's tensor at each forward: the names and devices are what must hold
    assert {n: p.device for n, p in now.items()} == {n: p.device for n, p in weights.items()}
    after = Runner(split.model, split.tokenizer, PROMPTS).sweep(variants()[:6])
    np.testing.assert_array_equal(after.kl, before.kl)


def test_lora_transfer_and_adapter_ablation_on_a_placed_model_equal_the_whole(tmp_path, atlas_cli, record_numbers):
    """`atlas run --device-map auto` with most layers on disk: LoRA training, transfer and adapter ablation write
    the whole model's records, bit for bit (one thread on both sides)."""
    args = [*LORA_RUN, "--experiments", LORA_EXPERIMENTS]
    whole = atlas_cli(tmp_path / "whole", args=args)
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    placed = atlas_cli(tmp_path / "placed", "--device-map", "auto", "--max-memory", half_of_tiny(), args=args)
    log = placed.communicate(timeout=300)[0]
    assert placed.returncode == 0 and "placed across cpu, disk" in log, log
    for key in LORA_EXPERIMENTS.split(","):
        na = record_numbers(RecordStore(tmp_path / "whole").load(key).result)
        nb = record_numbers(RecordStore(tmp_path / "placed").load(key).result)
        same = {k for k in na if na[k] == nb[k] or (np.isnan(na[k]) and np.isnan(nb[k]))}
        assert na.keys() == nb.keys() and set(na) - same <= {k for k in na if "seconds" in k}, key


def test_ray_replicas_placed_over_their_devices_equal_the_whole_model(tmp_path, atlas_cli, record_numbers):
    """`atlas run --ray --device-map auto`: every actor places its replica as the driver does (here over the
    CPU and disk); the sharded sweeps and LoRA training on a placed replica on a worker write the plain local
    run's records (the sweeps of layer ablation and transfer within the 1e-5 that batch composition moves them:
    shards change which variants share a chunk; LoRA training bit for bit)."""
    pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
    from atlas_core.spec import experiment as spec_of

    exps = "clean,layer_ablation,lora_training,transfer"
    args = [*LORA_RUN, "--experiments", exps]
    whole = atlas_cli(tmp_path / "whole", args=args)
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    ray_run = atlas_cli(
        tmp_path / "ray", "--ray", "--device-map", "auto", "--max-memory", half_of_tiny(), "--ray-shard", "2", args=args
    )
    log = ray_run.communicate(timeout=300)[0]
    assert ray_run.returncode == 0, log
    assert "replicas placed across cpu, disk" in log and "lora_training: running on Ray worker" in log, log
    for key in exps.split(","):
        ra, rb = RecordStore(tmp_path / "whole").load(key), RecordStore(tmp_path / "ray").load(key)
        assert (rb.provenance.get("worker") is not None) == spec_of(key).on_worker, key
        na, nb = record_numbers(ra.result), record_numbers(rb.result)
        exact = key not in ("layer_ablation", "transfer")
        bad = [
            k
            for k in na
            if "seconds" not in k
            and not (na[k] == nb[k] or (np.isnan(na[k]) and np.isnan(nb[k])))
            and (exact or not np.isclose(na[k], nb[k], rtol=1e-5, atol=1e-7))
        ]
        assert na.keys() == nb.keys() and not bad, (key, [(k, na[k], nb[k]) for k in bad[:5]])
