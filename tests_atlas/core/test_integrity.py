"""Nothing Atlas reads back is trusted unchecked: damaged records, manifests, sweep checkpoints,
LoRA training states, adapters and cached models are either an error naming the file and the fix, or
discarded and recomputed to the identical result; a non-finite metric is never stored; two runs on one
folder never train the same adapter twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas_core import AtlasError, checkpoints, orchestrate
from atlas_core.checkpoints import Checkpoints
from atlas_core.experiments import lora_fit, lora_training
from atlas_core.integrity import CorruptFile, NonFiniteMetric, sha256_file, unseal
from atlas_core.interventions import Patch, Variant
from atlas_core.models import offline
from atlas_core.models.loader import load
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore
from atlas_core.runner import Runner
from atlas_core.sites import Site

FAMILIES = ["copying", "arithmetic"]


class Interrupt(KeyboardInterrupt):
    pass


def plan(out, experiments, **kw) -> RunPlan:
    return RunPlan(
        model="tiny-qwen2",
        experiments=experiments,
        profile="smoke",
        out=out,
        device="cpu",
        families=FAMILIES,
        progress=False,
        report=False,
        **kw,
    )


def flip(path: Path, rng: random.Random, n: int = 1, lo: int = 0) -> None:
    """XOR ``n`` random bytes of ``path`` at offsets >= ``lo`` with a random non-zero mask."""
    data = bytearray(path.read_bytes())
    for i in rng.sample(range(lo, len(data)), n):
        data[i] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))


def tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Byte offsets of tensor ``name``'s data in a safetensors file (8-byte header length, JSON header, data)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def results(out: Path) -> dict:
    """Every record's result, less what differs between two identical computations (time, folder)."""
    varying = ("train_seconds", "adapter_dir")
    return {k: {f: v for f, v in r.result.items() if f not in varying} for k, r in RecordStore(out).records().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of layer ablation, LoRA training, transfer and adapter ablation."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_plan(plan(out, ["layer_ablation", "lora_training", "transfer", "adapter_ablation"]))
    return out


# ---- sweep checkpoints and the LoRA training state --------------------------------------------------------


def test_garbled_checkpoint_bytes_that_still_parse_are_discarded(tmp_path):
    ck = Checkpoints(tmp_path, interval=0)
    slot = ck.slot({"sweep": 1})
    arrays = {"kl": np.linspace(0, 1, 12).reshape(3, 4), "done": np.ones((3, 4), np.uint8)}
    slot.save(arrays, force=True)
    shapes = {k: v.shape for k, v in arrays.items()}
    assert slot.load(shapes) is not None
    data = bytearray(slot.path.read_bytes())
    data[-40] ^= 0x10  # inside the kl floats: the file still parses, one number changed
    slot.path.write_bytes(bytes(data))
    from safetensors.numpy import load_file

    garbled = load_file(str(slot.path))  # what a reader without the hash check would take
    assert not np.array_equal(garbled["kl"], arrays["kl"])
    assert slot.load(shapes) is None


def test_a_garbled_lora_state_is_refused_and_retrained(tmp_path):
    path = tmp_path / "state.pt"
    lora_fit.save_state(path, None, {"key": "k", "step": 3, "w": torch.arange(64.0)})
    assert lora_fit.load_state(path, "k")["step"] == 3
    flip(path, random.Random(0), lo=65)
    with pytest.raises(CorruptFile, match="does not match the SHA-256"):
        unseal(path)
    assert lora_fit.load_state(path, "k") is None


def test_an_interrupted_experiment_with_a_garbled_checkpoint_recomputes_to_the_identical_result(
    tmp_path, monkeypatch, reference
):
    out = _interrupted(tmp_path, monkeypatch, reference, "layer_ablation")  # two sweeps saved
    (first, _) = sorted((out / ".partial").glob("*/sweep-*.safetensors"))
    start, _ = tensor_span(first, "argmax_match")
    data = bytearray(first.read_bytes())
    data[start] ^= 0x01  # one variant's argmax match flipped: parses (the 0.281 instead of 0.094)
    first.write_bytes(bytes(data))
    run_plan(plan(out, ["layer_ablation"]))
    assert results(out)["layer_ablation"] == results(reference)["layer_ablation"]


# ---- records and the manifest ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "empty", "nul", "flipped-digit", "not-a-record", "foreign-name"])
def test_a_damaged_record_is_an_error_naming_it_before_the_model_loads(damage, tmp_path, monkeypatch, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    rec = out / "layer_ablation.json"
    text = rec.read_text()
    if damage == "truncated":
        rec.write_text(text[: len(text) // 2])
    elif damage == "empty":
        rec.write_text("")
    elif damage == "nul":
        rec.write_bytes(b"\0" * len(text))
    elif damage == "flipped-digit":  # still valid JSON, one number different: caught by the record's hash
        i = next(i for i, c in enumerate(text) if c.isdigit() and i > text.index('"result"'))
        rec.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :])
    elif damage == "not-a-record":
        rec.write_text(json.dumps({"experiment": "../../etc", "seed": "0"}))
    else:
        doc = json.loads(text)
        doc.pop("sha256")
        doc["experiment"] = "../outside"
        rec.write_text(json.dumps(doc))

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the stored records were checked")

    monkeypatch.setattr(orchestrate, "load", refuse)
    with pytest.raises(CorruptFile) as err:
        run_plan(plan(out, ["layer_ablation"]))
    assert str(rec) in str(err.value) and "rerun atlas run" in str(err.value)
    from atlas_core.cli import main

    assert main(["compare", str(out), str(reference)]) == 2  # one `atlas: error:` line, no traceback


def test_a_record_and_its_manifest_entry_share_one_finishing_time(tmp_path, monkeypatch):
    """The manifest is rebuilt from the records' ``finished``; a clock read twice (once per file) made the two
    differ whenever a second ticked over between them. Perturbation: a clock that ticks on every read."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(orchestrate, "now", lambda: f"2026-01-01T00:00:{next(ticks):05d}Z")
    out = tmp_path / "run"
    run_plan(plan(out, ["layer_ablation"]))
    store = RecordStore(out)
    entry = store.manifest()["experiments"]["layer_ablation"]
    assert entry["finished"] == store.records()["layer_ablation"].provenance["finished"]
    assert store.rebuilt_manifest()["experiments"] == store.manifest()["experiments"]


@pytest.mark.parametrize("damage", ["truncated", "nul", "flipped", "not-an-object"])
def test_a_damaged_manifest_is_rebuilt_from_the_records(damage, tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    man = out / "manifest.json"
    text = man.read_text()
    if damage == "truncated":
        man.write_text(text[:100])
    elif damage == "nul":
        man.write_bytes(b"\0" * 10)
    elif damage == "flipped":
        i = text.index('"wall_seconds": ') + len('"wall_seconds": ')
        man.write_text(text[:i] + "9" + text[i:])  # a wrong number in valid JSON
    else:
        man.write_text("[1, 2]")
    manifest = RecordStore(out).manifest()
    expected = RecordStore(reference).manifest()
    assert manifest["experiments"] == {k: {f: v for f, v in e.items()} for k, e in expected["experiments"].items()}
    assert manifest["model"] == expected["model"]
    run_plan(plan(out, ["layer_ablation"]))  # a run on it works and writes a sound manifest again
    assert RecordStore(out).manifest()["experiments"].keys() == expected["experiments"].keys()


def test_a_tampered_record_fails_its_hash_even_when_it_parses(tmp_path, reference):
    """The perturbation for the record seal: the same edit without a seal is read as written."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    rec = out / "layer_ablation.json"
    doc = json.loads(rec.read_text())
    doc["result"]["n_layers"] += 1
    rec.write_text(json.dumps(doc))
    with pytest.raises(CorruptFile, match="does not match the SHA-256"):
        RecordStore(out).load("layer_ablation")
    doc.pop("sha256")  # an unsealed (committed-baseline style) record is parsed and trusted as data
    rec.write_text(json.dumps(doc))
    assert RecordStore(out).load("layer_ablation").result["n_layers"] == doc["result"]["n_layers"]


# ---- the adapter ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbled", "truncated", "meta"])
def test_a_damaged_adapter_is_refused_naming_the_fix(damage, tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for key in ("transfer", "adapter_ablation"):
        (out / f"{key}.json").unlink()
    weights = out / "lora_adapter_seed0" / "adapter_model.safetensors"
    if damage == "garbled":
        flip(weights, random.Random(1), n=4, lo=weights.stat().st_size // 2)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    else:
        (out / "lora_adapter_seed0" / "atlas_meta.json").write_text('{"key": ')
    with pytest.raises(CorruptFile) as err:
        run_plan(plan(out, ["transfer", "adapter_ablation"]))
    assert f"delete {out / 'lora_adapter_seed0'} and run again" in str(err.value)
    assert not (out / "transfer.json").exists()
    shutil.rmtree(out / "lora_adapter_seed0")  # the fix the message names works
    run_plan(plan(out, ["transfer", "adapter_ablation"]))
    assert results(out)["transfer"] == results(reference)["transfer"]


# ---- non-finite metrics ------------------------------------------------------------------------------------


def test_a_non_finite_kl_is_an_error_naming_variant_and_prompt(tiny):
    prompts = ["The capital of Italy is", "1 + 2 ="]
    runner = Runner(tiny.model, tiny.tokenizer, prompts)
    nan = torch.full_like(runner.residuals[2], float("nan"))
    variants = [Variant("fine", ()), Variant("poisoned", (Patch(Site("resid", 1), nan),))]
    with pytest.raises(NonFiniteMetric, match=r"KL is nan for variant 'poisoned', prompt 'The capital of Italy is'"):
        runner.sweep(variants)


def test_atlas_run_stores_no_record_with_a_non_finite_metric(tmp_path, monkeypatch):
    import atlas_core.runner as runner_mod

    real = runner_mod.kl_divergence
    monkeypatch.setattr(runner_mod, "kl_divergence", lambda a, b: real(a, b) * float("nan"))
    out = tmp_path / "run"
    with pytest.raises(NonFiniteMetric, match=r"^layer_ablation: KL is nan for variant"):
        run_plan(plan(out, ["layer_ablation"]))
    assert not (out / "layer_ablation.json").exists()


def test_a_model_with_nan_weights_fails_at_its_clean_pass(tmp_path):
    lm = load("tiny-qwen2", device="cpu")
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteMetric, match="clean log-probability is nan"):
        Runner(lm.model, lm.tokenizer, ["a b c"]).clean_logprobs


# ---- the cached model ----------------------------------------------------------------------------------------

FAKE = "gemma-3-270m"  # a registered name; the entry holds tiny-qwen2's weights (nothing is downloaded)


def fake_entry(tmp_path: Path, monkeypatch, tiny) -> Path:
    """A cache (``ATLAS_CACHE``) under ``tmp_path`` holding ``FAKE``: tiny-qwen2 saved with a marker of its hashes."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ATLAS_CACHE", str(root))
    entry = root / FAKE
    entry.mkdir(parents=True)
    tiny.model.save_pretrained(entry)
    tiny.tokenizer.save_pretrained(entry)
    files = {p.name: sha256_file(p) for p in sorted(entry.iterdir()) if p.is_file()}
    (entry / offline.MARKER).write_text(
        json.dumps(
            {"name": FAKE, "gguf_sha256": "f" * 64, "files": files, "safetensors_sha256": files["model.safetensors"]}
        )
    )
    return entry


@pytest.fixture
def fake_cache(tmp_path, monkeypatch, tiny):
    return fake_entry(tmp_path, monkeypatch, tiny)


def test_a_damaged_cached_model_is_refused_naming_the_fix(fake_cache, monkeypatch):
    assert torch.isfinite(load(FAKE).model.lm_head.weight).all()
    hashed = []
    real = offline.sha256_file
    monkeypatch.setattr(offline, "sha256_file", lambda p: hashed.append(p) or real(p))
    load(FAKE)
    assert hashed == []  # size and mtime unchanged since the last full check: no rehash
    weights = fake_cache / "model.safetensors"
    flip(weights, random.Random(2), n=8, lo=weights.stat().st_size // 2)
    with pytest.raises(CorruptFile, match=rf"{FAKE} is damaged: .*model.safetensors .*atlas models fetch {FAKE}"):
        load(FAKE)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptFile, match="atlas models fetch"):
        load(FAKE)


def test_models_verify_hashes_even_an_entry_whose_size_and_mtime_were_kept(fake_cache):
    offline.verify(FAKE)
    cfg = fake_cache / "config.json"
    st = cfg.stat()
    text = cfg.read_text()
    cfg.write_text(text.replace('"hidden_size": 64', '"hidden_size": 65')[: len(text)])
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    offline.verify(FAKE)  # the cheap check trusts an unchanged size and mtime
    with pytest.raises(CorruptFile, match="config.json does not match"):
        offline.verify(FAKE, full=True)


def test_fetch_with_repair_rebuilds_a_damaged_entry(fake_cache, monkeypatch):
    flip(fake_cache / "model.safetensors", random.Random(3), n=4, lo=1000)
    rebuilt = []

    def rebuild(*args, **kwargs):  # stands for the download: the damaged entry must be gone by now
        rebuilt.append(not fake_cache.exists())
        raise AtlasError("offline")

    monkeypatch.setattr(offline, "_download_wheels", rebuild)
    with pytest.raises(AtlasError, match="offline"):
        offline.fetch(FAKE, progress=False, repair=True)
    assert rebuilt == [True]


# ---- two runs on one folder ----------------------------------------------------------------------------------


def _hold(lock_file: str, then: str = "pass") -> subprocess.Popen:
    """Another process holding ``lock_file``; it runs the Python ``then`` and releases when its stdin closes."""
    code = (
        "import sys, shutil; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
        f"print('held', flush=True); sys.stdin.read(); {then}; l.release()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, lock_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def make_ctx_for(out: Path):
    from atlas_core.experiments.context import Context
    from atlas_core.profiles import get_profile
    from atlas_core.tasks import load_families

    profile = get_profile("smoke")
    return Context(
        load("tiny-qwen2", device="cpu"),
        load_families(FAMILIES, n_items=profile.n_items),
        profile,
        seed=0,
        out_dir=out,
        progress=False,
    )


def test_training_an_adapter_another_run_is_training_fails_at_once_naming_the_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold(RecordStore(out).lock("lora_adapter_seed0").lock_file)
    try:
        with pytest.raises(
            AtlasError, match=r"another atlas run .* is training the seed-0 LoRA adapter .*lora_adapter_seed0"
        ):
            run_plan(plan(out, ["lora_training"]))  # refused before the model loads
        ctx = make_ctx_for(out)
        with pytest.raises(AtlasError, match=r"is training the seed-0 LoRA adapter"):
            lora_training.run(ctx)  # and by the training itself, for a caller that skipped the checks
    finally:
        holder.communicate("")
    assert not (out / "lora_adapter_seed0").exists()


def test_transfer_waits_for_the_run_training_the_adapter_and_reuses_it(tmp_path, monkeypatch, reference):
    out = tmp_path / "run"
    out.mkdir()
    lock = RecordStore(out).lock("lora_adapter_seed0").lock_file
    src, dst = reference / "lora_adapter_seed0", out / "lora_adapter_seed0"
    holder = _hold(lock, then=f"shutil.copytree({str(src)!r}, {str(dst)!r})")  # its run saves the adapter
    trained = []
    monkeypatch.setattr(lora_training, "train", lambda *a, **k: trained.append(1))
    import threading

    threading.Timer(1.0, lambda: holder.stdin.close()).start()
    try:
        run_plan(plan(out, ["transfer"]))
    finally:
        holder.wait(timeout=30)
    assert trained == []  # the other run's adapter was read back, not trained again
    assert results(out)["transfer"] == results(reference)["transfer"]


def test_clearing_checkpoints_tolerates_another_run_clearing_at_once(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    for key in ("layer_ablation", "mlp_ablation"):
        store.partial_dir(key, "0123456789abcdef").mkdir(parents=True)
    real_rmtree, real_rmdir = shutil.rmtree, Path.rmdir

    def racing_rmtree(path, ignore_errors=False):  # the other run clears its own folder meanwhile
        real_rmtree(path, ignore_errors=ignore_errors)
        real_rmtree(tmp_path / ".partial" / "mlp_ablation-0123456789abcdef", ignore_errors=True)

    def racing_rmdir(self):  # ... and a third starts an experiment just before .partial is removed
        store.partial_dir("head_ablation", "0123456789abcdef").mkdir()
        return real_rmdir(self)

    monkeypatch.setattr(shutil, "rmtree", racing_rmtree)
    monkeypatch.setattr(Path, "rmdir", racing_rmdir)
    store.clear_partial("layer_ablation")
    assert [p.name for p in (tmp_path / ".partial").iterdir()] == ["head_ablation-0123456789abcdef"]


# ---- fault injection ---------------------------------------------------------------------------------------


def _interrupted(tmp_path: Path, monkeypatch, reference: Path, experiment: str) -> Path:
    """A copy of the reference run with ``experiment`` removed and then interrupted part way (checkpoints saved)."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / f"{experiment}.json").unlink()
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "INTERVAL", 0.0)
        if experiment == "lora_training":
            real, calls = lora_fit.target_loss_of, {"n": 0}

            def stop(*a, **k):
                calls["n"] += 1
                if calls["n"] > 5:
                    raise Interrupt
                return real(*a, **k)

            m.setattr(lora_fit, "target_loss_of", stop)
        else:
            real_sweep, calls = Runner.sweep, {"n": 0}

            def stop(self, *a, **k):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise Interrupt
                return real_sweep(self, *a, **k)

            m.setattr(Runner, "sweep", stop)
        with pytest.raises(Interrupt):
            run_plan(plan(out, [experiment]))
    return out


KINDS = {  # file kind -> (how to prepare a run folder holding it, its path in the folder, experiments to rerun)
    "record": (None, "layer_ablation.json", ["layer_ablation"]),
    "manifest": (None, "manifest.json", ["layer_ablation"]),
    "checkpoint": ("layer_ablation", ".partial/*/sweep-001.safetensors", ["layer_ablation"]),
    "lora-state": ("lora_training", ".partial/*/lora_train_seed0.pt", ["lora_training"]),
    "adapter": (None, "lora_adapter_seed0/adapter_model.safetensors", ["transfer", "adapter_ablation"]),
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", [*KINDS, "cached-model"])
def test_random_byte_flips_never_yield_a_stored_wrong_number(kind, seed, tmp_path, monkeypatch, reference, tiny):
    """Random bytes flipped in any kind of file Atlas writes: the rerun either fails with an error naming
    the file, or stores results identical to the uninterrupted reference run."""
    rng = random.Random(f"{kind}-{seed}")
    if kind == "cached-model":
        entry = fake_entry(tmp_path, monkeypatch, tiny)
        target = entry / rng.choice(sorted(p.name for p in entry.iterdir() if p.name != offline.MARKER))
        flip(target, rng, n=rng.randint(1, 4))
        with pytest.raises(AtlasError) as err:
            load(FAKE)
        assert target.name in str(err.value) or str(entry) in str(err.value)
        return
    interrupted, pattern, rerun = KINDS[kind]
    out = _interrupted(tmp_path, monkeypatch, reference, interrupted) if interrupted else tmp_path / "run"
    if not interrupted:
        shutil.copytree(reference, out)
        for key in rerun:
            if kind != "record" and kind != "manifest":
                (out / f"{key}.json").unlink()
    (target,) = out.glob(pattern)
    if kind == "checkpoint":  # in the KL's bytes, where a flip still parses (header flips are easy to catch)
        start, end = tensor_span(target, "kl")
        data = bytearray(target.read_bytes())
        data[rng.randrange(start, end)] ^= rng.randrange(1, 256)
        target.write_bytes(bytes(data))
    else:
        flip(target, rng, n=rng.randint(1, 4))
    try:
        run_plan(plan(out, rerun))
    except AtlasError as exc:
        assert str(target) in str(exc) or str(target.parent) in str(exc), exc
        return
    assert {k: results(out)[k] for k in rerun} == {k: results(reference)[k] for k in rerun}


def test_a_page_cannot_make_the_number_check_read_outside_its_run_folder(tmp_path):
    from atlas_core.report.check import verify_numbers

    (tmp_path / "secret.json").write_text('{"x": 1}')
    (tmp_path / "run").mkdir()
    html = '<span class="n" data-value="1" data-src="../secret#/x">1</span>'
    checked, problems = verify_numbers(html, {None: tmp_path / "run"})
    assert checked == 0 and problems == ["../secret#/x: '../secret' is not a record name"]


def test_the_debris_of_an_adapter_save_killed_mid_way_is_removed_by_the_next_save(tmp_path):
    out = tmp_path / "run"
    (out / ".lora_adapter_seed0.old.k1ll3d" / "adapter").mkdir(parents=True)
    run_plan(plan(out, ["lora_training"]))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".lora")) == []
    assert lora_training.read_meta(out / "lora_adapter_seed0")["key"]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """tiny-gpt2 saved as a Hugging Face folder (what `atlas run --model DIR` loads)."""
    from atlas_core.models.tiny import build_tiny

    model, tok = build_tiny("gpt2")
    folder = tmp_path_factory.mktemp("models") / "gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _damage_weights(folder: Path, damage: str) -> str:
    """Damage ``folder``'s model.safetensors one way; returns the tensor named in the expected error."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return "ends at byte"
    tensors = load_file(path)
    key = "transformer.h.1.mlp.c_fc.weight"
    if damage == "missing":
        del tensors[key]
    elif damage == "unexpected":
        key = "transformer.h.9.mlp.c_fc.weight"
        tensors[key] = torch.zeros(2, 2)
    else:  # a shape mismatch
        tensors[key] = torch.zeros(3, 5)
    save_file(tensors, path, metadata={"format": "pt"})
    return key


@pytest.mark.parametrize(
    "damage, words",
    [
        ("missing", "is missing from"),
        ("unexpected", "which the model does not have"),
        ("shape", "has the wrong shape (file [3, 5], model [64, 256])"),
        ("truncated", "is truncated: tensor"),
    ],
)
def test_weights_with_a_hole_are_refused_naming_file_and_tensor(damage, words, gpt2_dir, tmp_path, capsys, monkeypatch):
    from atlas_core.cli import main

    folder = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, folder)
    key = _damage_weights(folder, damage)
    patched = []
    monkeypatch.setattr(orchestrate, "_run_job", lambda *a: patched.append(a))  # nothing may be computed
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(folder),
                "--profile",
                "smoke",
                "--experiments",
                "clean",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-report",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = err.strip().splitlines()[-1]  # after transformers' own loading progress
    assert err.startswith("atlas: error: "), err
    assert words in err and str(folder / "model.safetensors") in err
    assert (key in err) if damage != "truncated" else "tensor 'transformer." in err
    assert not patched and not out.exists()


def test_a_model_folders_weights_hash_covers_what_was_loaded(gpt2_dir, tmp_path):
    """A file transformers does not read leaves the hash; the weights and config it reads change it."""
    folder = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, folder)
    first = load(str(folder), device="cpu").info.weights_sha256
    (folder / "stray.safetensors").write_bytes(b"not read")
    assert load(str(folder), device="cpu").info.weights_sha256 == first
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 1e-3}))
    assert load(str(folder), device="cpu").info.weights_sha256 != first
