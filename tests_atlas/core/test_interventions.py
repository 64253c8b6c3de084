"""The intervention core on tiny-qwen2: sites and ``intervene`` are exact where they must be, touch only
what they address, clean up after themselves (exceptions included) and reject bad input before any
forward runs. Property-based (hypothesis) over prompts, sites, layers and heads; CPU fp32.
"""

from __future__ import annotations

import string
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atlas_core import AtlasError
from atlas_core.forward import encode
from atlas_core.hooks import count_hooks, hooked
from atlas_core.interventions import Ablate, ExitAt, Noop, Patch, Skip, Steer, Variant, intervene
from atlas_core.models.adapters import (
    adapter_for,
    decoder,
    final_norm,
    layer_part,
    layer_window,
    layers,
    lm_head,
)
from atlas_core.sites import SITE_KINDS, Dims, Site, dims

ALPHABET = string.ascii_letters + string.digits + " .,:=+()"
PROMPT = st.text(alphabet=ALPHABET, min_size=1, max_size=10)
PROMPTS = st.lists(PROMPT, min_size=1, max_size=4)
FEW = settings(max_examples=20, deadline=None)


# ---- helpers ---------------------------------------------------------------------------------------
def logits(model, enc) -> torch.Tensor:
    """The stock CausalLM forward: logits at every position (nothing Atlas-specific on the path)."""
    with torch.inference_mode():
        return model(
            input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=enc.position_ids, use_cache=False
        ).logits


@contextmanager
def o_proj_inputs(model, store: dict[int, torch.Tensor]):
    """Record every layer's attention output-projection input (what the ``head`` site slices)."""
    path = adapter_for(model).o_proj

    def rec(layer):
        def pre(module, args, kwargs):
            store[layer] = (args[0] if args else kwargs["input"]).detach().clone()

        return pre

    with hooked([(layer_part(model, i, path), "pre", rec(i)) for i in range(len(layers(model)))]):
        yield store


@contextmanager
def layer_io(model, store: dict):
    """Record each layer's input and output hidden states."""

    def rec(i):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            store[i] = (x.detach().clone(), out.detach().clone())

        return hook

    with hooked([(m, "forward", rec(i)) for i, m in enumerate(layers(model))]):
        yield store


@st.composite
def sites(draw, d, kinds=SITE_KINDS):
    kind = draw(st.sampled_from(kinds))
    layer = draw(st.integers(0, d.n_layers - 1))
    head = draw(st.integers(0, d.n_heads - 1)) if kind == "head" else None
    return Site(kind, layer, head)


def tiny_dims(tiny):
    return dims(tiny.model)


# ---- identity ---------------------------------------------------------------------------------------
@FEW
@given(data=st.data(), prompts=PROMPTS)
def test_noop_at_any_site_is_exactly_the_plain_forward(tiny, data, prompts):
    d = tiny_dims(tiny)
    noops = data.draw(st.lists(sites(d), min_size=1, max_size=4))
    enc = encode(tiny.tokenizer, prompts)
    plain = logits(tiny.model, enc)
    with intervene(tiny.model, [Noop(s) for s in noops]):
        hooked_ = logits(tiny.model, enc)
    assert torch.equal(hooked_, plain), [str(s) for s in noops]


@FEW
@given(
    layer=st.integers(0, 3),
    positions=st.sampled_from(["all", "last"]),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 100.0),
    prompts=PROMPTS,
)
def test_zero_strength_steering_is_the_identity(tiny, layer, positions, seed, scale, prompts):
    d = tiny_dims(tiny)
    direction = scale * torch.randn(d.d_model, generator=torch.Generator().manual_seed(seed))
    enc = encode(tiny.tokenizer, prompts)
    plain = logits(tiny.model, enc)
    with intervene(tiny.model, [Steer(layer, direction, 0.0, positions)]):
        steered = logits(tiny.model, enc)
    assert torch.equal(steered, plain)


def test_empty_intervention_list_and_empty_variant_are_the_identity(tiny):
    enc = encode(tiny.tokenizer, ["hello world", "ab"])
    plain = logits(tiny.model, enc)
    with intervene(tiny.model, []):
        assert torch.equal(logits(tiny.model, enc), plain)
    with intervene(tiny.model, Variant("clean").interventions):
        assert torch.equal(logits(tiny.model, enc), plain)
    assert count_hooks(tiny.model) == 0


# ---- what each intervention writes ----------------------------------------------------------------------
@FEW
@given(layer=st.integers(0, 3), head=st.integers(0, 3), prompts=PROMPTS)
def test_zero_ablating_one_head_changes_only_its_slice_at_the_o_proj_input(tiny, layer, head, prompts):
    d = tiny_dims(tiny)
    enc = encode(tiny.tokenizer, prompts)
    clean: dict[int, torch.Tensor] = {}
    with o_proj_inputs(tiny.model, clean):
        logits(tiny.model, enc)
    ablated: dict[int, torch.Tensor] = {}
    with intervene(tiny.model, [Ablate(Site("head", layer, head))]):
        with o_proj_inputs(tiny.model, ablated):  # registered after the ablation: sees what o_proj gets
            out = logits(tiny.model, enc)
    lo, hi = head * d.head_dim, (head + 1) * d.head_dim
    for below in range(layer):
        assert torch.equal(ablated[below], clean[below]), f"layer {below} below the ablation changed"
    x, c = ablated[layer], clean[layer]
    assert x.shape[-1] == d.n_heads * d.head_dim
    assert torch.count_nonzero(x[..., lo:hi]) == 0, "the ablated head's slice is not zero"
    assert torch.count_nonzero(c[..., lo:hi]) > 0, "clean head output was already zero: the test shows nothing"
    assert torch.equal(x[..., :lo], c[..., :lo]) and torch.equal(x[..., hi:], c[..., hi:]), (
        "another head's slice changed"
    )
    assert not torch.equal(out, logits(tiny.model, enc)), "ablating a head changed nothing downstream"


@FEW
@given(data=st.data(), prompts=PROMPTS)
def test_zero_ablation_writes_zeros_at_the_site(tiny, data, prompts):
    d = tiny_dims(tiny)
    site = data.draw(sites(d, kinds=("resid", "delta")))
    enc = encode(tiny.tokenizer, prompts)
    io: dict = {}
    with intervene(tiny.model, [Ablate(site)]), layer_io(tiny.model, io):
        logits(tiny.model, enc)
    x, out = io[site.layer]
    if site.kind == "resid":
        assert torch.count_nonzero(out) == 0
    else:  # the block writes nothing: its output is its input
        assert torch.equal(out, x)


@FEW
@given(
    layer=st.integers(0, 3),
    strength=st.floats(-8, 8).filter(lambda s: abs(s) > 1e-3),
    positions=st.sampled_from(["all", "last"]),
    seed=st.integers(0, 2**16),
    prompts=PROMPTS,
)
def test_steering_adds_strength_times_direction_where_asked(tiny, layer, strength, positions, seed, prompts):
    d = tiny_dims(tiny)
    direction = torch.randn(d.d_model, generator=torch.Generator().manual_seed(seed))
    enc = encode(tiny.tokenizer, prompts)
    clean: dict = {}
    with layer_io(tiny.model, clean):
        logits(tiny.model, enc)
    steered: dict = {}
    with intervene(tiny.model, [Steer(layer, direction, strength, positions)]), layer_io(tiny.model, steered):
        logits(tiny.model, enc)
    got = steered[layer][1] - clean[layer][1]
    want = torch.zeros_like(got)
    if positions == "all":
        want[:] = strength * direction
    else:
        want[:, -1] = strength * direction
    torch.testing.assert_close(got, want, atol=1e-5 * (1 + abs(strength)), rtol=1e-5)
    if positions == "last":
        assert torch.equal(steered[layer][1][:, :-1], clean[layer][1][:, :-1])


@FEW
@given(data=st.data(), positions=st.sampled_from(["all", "last"]), seed=st.integers(0, 2**16), prompts=PROMPTS)
def test_patch_writes_the_given_activations(tiny, data, positions, seed, prompts):
    d = tiny_dims(tiny)
    site = data.draw(sites(d, kinds=("resid", "head")))
    enc = encode(tiny.tokenizer, prompts)
    width = d.head_dim if site.kind == "head" else d.d_model
    value = torch.randn(enc.n, enc.seq, width, generator=torch.Generator().manual_seed(seed))
    clean: dict = {}
    with layer_io(tiny.model, clean), o_proj_inputs(tiny.model, {}) as clean_o:
        logits(tiny.model, enc)
    got: dict = {}
    with intervene(tiny.model, [Patch(site, value, positions)]):
        with layer_io(tiny.model, got), o_proj_inputs(tiny.model, {}) as got_o:
            logits(tiny.model, enc)
    if site.kind == "resid":
        new, old = got[site.layer][1], clean[site.layer][1]
    else:
        sl = slice(site.head * d.head_dim, (site.head + 1) * d.head_dim)
        new, old = got_o[site.layer][..., sl], clean_o[site.layer][..., sl]
    if positions == "all":
        assert torch.equal(new, value)
    else:
        assert torch.equal(new[:, -1], value[:, -1]) and torch.equal(new[:, :-1], old[:, :-1])


@FEW
@given(layer=st.integers(0, 3), prompts=PROMPTS)
def test_skip_passes_the_input_residual_through(tiny, layer, prompts):
    enc = encode(tiny.tokenizer, prompts)
    io: dict = {}
    with intervene(tiny.model, [Skip((layer,))]), layer_io(tiny.model, io):
        logits(tiny.model, enc)
    x, out = io[layer]
    assert torch.equal(out, x)


@FEW
@given(layer=st.integers(0, 3), prompts=PROMPTS)
def test_exit_at_is_the_logit_lens_and_the_windowed_stock_forward(tiny, layer, prompts):
    model = tiny.model
    enc = encode(tiny.tokenizer, prompts)
    io: dict = {}
    with layer_io(model, io):
        logits(model, enc)
    with torch.inference_mode():
        lens = lm_head(model)(final_norm(model)(io[layer][1]))
    with intervene(model, [ExitAt(layer)]):
        assert len(layers(model)) == layer + 1
        exited = logits(model, enc)
    with layer_window(model, 0, layer + 1):
        windowed = logits(model, enc)
    assert len(layers(model)) == dims(model).n_layers
    torch.testing.assert_close(exited, lens, atol=1e-5, rtol=0)
    assert torch.equal(exited, windowed)


def test_exit_with_interventions_above_the_exit_layer(tiny):
    """Hooks are addressed before the layer window narrows the list; those above the exit never fire."""
    enc = encode(tiny.tokenizer, ["hello", "ab"])
    with intervene(tiny.model, [ExitAt(1)]):
        want = logits(tiny.model, enc)
    with intervene(tiny.model, [ExitAt(1), Ablate(Site("resid", 3)), Noop(Site("head", 2, 1))]):
        got = logits(tiny.model, enc)
    assert torch.equal(got, want)
    assert count_hooks(tiny.model) == 0 and len(layers(tiny.model)) == 4


# ---- clean-up after exceptions ------------------------------------------------------------------------
class Boom(RuntimeError):
    pass


def _assert_clean(tiny, enc, plain, types):
    model = tiny.model
    assert count_hooks(model) == 0, "hooks left after an exception"
    assert len(layers(model)) == dims(model).n_layers
    assert decoder(model).config.layer_types == types
    assert torch.equal(logits(model, enc), plain), "the model no longer gives its clean output"


@FEW
@given(data=st.data(), where=st.sampled_from(["body", "hook", "value"]), exit_=st.booleans())
def test_no_hook_left_after_any_exception(tiny, data, where, exit_):
    model = tiny.model
    d = tiny_dims(tiny)
    enc = encode(tiny.tokenizer, ["hello world", "ab"])
    plain = logits(model, enc)
    types = list(decoder(model).config.layer_types)
    ivs = [Ablate(s) for s in data.draw(st.lists(sites(d), min_size=1, max_size=3))]
    if exit_:
        ivs.append(ExitAt(data.draw(st.integers(0, d.n_layers - 1))))
    if where == "value":  # an intervention's own hook fails mid-forward: too few cached positions
        short = torch.zeros(enc.n, enc.seq - 1, d.d_model)
        ivs.insert(0, Patch(Site("resid", 0), short))

    def explode(module, args, kwargs, output):
        raise Boom("hook failed mid-forward")

    with pytest.raises((Boom, AtlasError)):
        with intervene(model, ivs):
            if exit_:
                assert len(layers(model)) < d.n_layers or ivs[-1].layer == d.n_layers - 1
            if where == "body":
                raise Boom("inside the with-block")
            if where == "hook":
                with hooked([(layers(model)[0], "forward", explode)]):
                    logits(model, enc)
            else:
                logits(model, enc)
    _assert_clean(tiny, enc, plain, types)


def test_layer_window_restores_layers_and_layer_types_after_an_exception(tiny):
    model = tiny.model
    dec = decoder(model)
    full, types = dec.layers, dec.config.layer_types
    with pytest.raises(Boom):
        with layer_window(model, 1, 3):
            assert len(dec.layers) == 2 and len(dec.config.layer_types) == 2
            raise Boom()
    assert dec.layers is full and dec.config.layer_types is types
    for bad in [(2, 2), (-1, 2), (0, 5), (3, 1)]:
        with pytest.raises(AtlasError, match="out of range"):
            with layer_window(model, *bad):
                pass
    assert dec.layers is full


def test_hooked_removes_hooks_registered_before_a_bad_spec(tiny):
    model = tiny.model
    with pytest.raises(ValueError, match="unknown hook kind"):
        with hooked([(layers(model)[0], "forward", lambda *a: None), (layers(model)[1], "sideways", None)]):
            pass
    assert count_hooks(model) == 0


def test_count_hooks_ignores_transformers_own_output_capture_hooks(tiny):
    """transformers 5 installs inert output-capturing hooks for good on the first output_hidden_states
    call; they are not Atlas hooks and must not trip the leak guard."""
    enc = encode(tiny.tokenizer, ["hello"])
    with torch.inference_mode():
        out = tiny.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
    assert len(out.hidden_states) == 5
    assert count_hooks(tiny.model) == 0
    with hooked([(layers(tiny.model)[0], "forward", lambda *a: None)]):
        assert count_hooks(tiny.model) == 1
        assert count_hooks(tiny.model, include_library=True) >= 1


# ---- bad input: a clear error before any forward --------------------------------------------------------
def _bad_interventions(d):
    w = d.d_model
    return {
        "layer out of range": Ablate(Site("resid", d.n_layers)),
        "negative layer": Noop(Site("mlp", -1)),
        "head out of range": Ablate(Site("head", 0, d.n_heads)),
        "head site without head": Ablate(Site("head", 0)),
        "head on a non-head site": Ablate(Site("resid", 0, 1)),
        "fractional head": Ablate(Site("head", 0, 1.5)),
        "boolean layer": Noop(Site("resid", True)),
        "fractional layer": Noop(Site("resid", 1.0)),
        "unknown site kind": Ablate(Site("residual", 0)),
        "unknown mode": Ablate(Site("resid", 0), "mean-ish"),
        "mean without a vector": Ablate(Site("resid", 0), "mean"),
        "mean of the wrong width": Ablate(Site("resid", 0), "mean", torch.zeros(w + 1)),
        "resample without donors": Ablate(Site("resid", 0), "resample"),
        "resample of the wrong width": Ablate(Site("head", 0, 0), "resample", torch.zeros(1, 3, w)),
        "direction of the wrong width": Steer(0, torch.zeros(w - 1), 1.0),
        "direction of the wrong rank": Steer(0, torch.zeros(1, w), 1.0),
        "direction not a tensor": Steer(0, [0.0] * w, 1.0),
        "steer layer out of range": Steer(d.n_layers, torch.zeros(w), 1.0),
        "unknown steer positions": Steer(0, torch.zeros(w), 1.0, "first"),
        "unknown patch positions": Patch(Site("resid", 0), torch.zeros(1, 3, w), "middle"),
        "patch of the wrong width": Patch(Site("resid", 0), torch.zeros(1, 3, w + 1)),
        "patch of the wrong rank": Patch(Site("resid", 0), torch.zeros(3, w)),
        "head patch of the model width": Patch(Site("head", 1, 0), torch.zeros(1, 3, w)),
        "skip nothing": Skip(()),
        "skip out of range": Skip((0, d.n_layers)),
        "exit out of range": ExitAt(d.n_layers),
        "not an intervention": "ablate L0",
    }


@pytest.mark.parametrize("case", list(_bad_interventions(Dims(4, 4, 16, 64))))
def test_bad_intervention_raises_before_any_forward(tiny, case, forward_counter):
    iv = _bad_interventions(tiny_dims(tiny))[case]
    enc = encode(tiny.tokenizer, ["hello"])
    with forward_counter(tiny.model) as calls:
        with pytest.raises(AtlasError) as err:
            with intervene(tiny.model, [Noop(Site("resid", 0)), iv]):
                logits(tiny.model, enc)
        assert calls == [], f"a forward ran before the error ({case})"
    assert len(str(err.value)) > 20
    assert count_hooks(tiny.model) == 0


def test_numpy_integer_layers_and_heads_are_accepted(tiny):
    """Indices straight from numpy (argmax over a sweep) address the same site as Python ints."""
    import numpy as np

    enc = encode(tiny.tokenizer, ["hello", "ab"])
    with intervene(
        tiny.model, [Ablate(Site("head", np.int64(2), np.int64(1))), Steer(np.int32(1), torch.ones(64), 1.0)]
    ):
        a = logits(tiny.model, enc)
    with intervene(tiny.model, [Ablate(Site("head", 2, 1)), Steer(1, torch.ones(64), 1.0)]):
        b = logits(tiny.model, enc)
    assert torch.equal(a, b)


def test_two_exits_rejected(tiny, forward_counter):
    with forward_counter(tiny.model) as calls:
        with pytest.raises(AtlasError, match="one layer"):
            with intervene(tiny.model, [ExitAt(1), ExitAt(2)]):
                pass
        assert calls == []


@pytest.mark.parametrize("prompts", [[], [""], ["ok", ""], ["ok", None]])
def test_empty_prompts_rejected(tiny, prompts):
    with pytest.raises(AtlasError, match="empty"):
        encode(tiny.tokenizer, prompts)
