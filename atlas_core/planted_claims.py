"""The planted models' claims, generated from their specification (``planted.json``), never from a run.

Each planted mechanism becomes claims of the existing kinds on the statistics the experiments expose:
locations are ``value`` claims with tolerance 0 on index statistics (``heads.max_layer``, ``mlp.max_layer``,
``hub.skip.top_layer``); "changes nothing" is ``at_most`` on a skip KL; "breaks" and "works" are
``at_least`` thresholds far from the null. ``render`` writes them as a claims file (TOML).
"""

from __future__ import annotations

from atlas_core.models.planted import FAMILIES, specification

PROFILE = "planted"
KL_ZERO = 1e-6  # an exact identity skipped: KL 0 within float rounding
KL_BROKEN = 0.5  # a planted layer skipped: its family (a fifth of the prompts) loses its answer
# the serial layer under a parallel block: nothing reads the gate its head writes, but the gate is in the residual,
# so later LayerNorms divide by a slightly larger spread at '#' (not cancelled as the mean is): not an exact
# identity like the others, a change four orders below KL_SERIAL (measured on planted-gpt-neox: 6.7e-7)
KL_SILENT = 1e-4
KL_SERIAL = 0.3  # the serial layer skipped: planted_serial (a fifth of the prompts, answered at p ~ 0.8) loses it


def claims(layout: str = "llama", seed: int = 0) -> list[dict]:
    """The claims ``planted-<layout>`` at ``seed`` must satisfy, from :func:`specification` alone."""
    spec = specification(layout, seed)
    m, pos = spec["model"], spec["positions"]
    n = spec["n_layers"]
    out: list[dict] = []

    def add(cid: str, statistic: str, kind: str, description: str, **kw) -> None:
        out.append(
            {
                "id": f"{m}-s{seed}:{cid}",
                "model": m,
                "statistic": statistic,
                "kind": kind,
                "description": description,
                **kw,
            }
        )

    add("hub", "hub.skip.top_layer", "value", f"the hub is L{pos['hub']}", expected=pos["hub"], tolerance=0)
    add(
        "hub-rank",
        "hub.skip.ranking",
        "rank",
        f"skipping L{pos['hub']} moves the output most",
        layer=pos["hub"],
        max_rank=1,
    )
    add(
        "head-layer",
        "heads.max_layer",
        "value",
        f"the strongest head is in L{pos['copy']}",
        expected=pos["copy"],
        tolerance=0,
    )
    add(
        "head",
        "heads.max_head",
        "value",
        f"the strongest head is H{pos['copy_head']} (of its GQA group {pos['copy_group_heads']})",
        expected=pos["copy_head"],
        tolerance=0,
    )
    add(
        "mlp", "mlp.max_layer", "value", f"the strongest MLP is L{pos['recall']}'s", expected=pos["recall"], tolerance=0
    )
    # the same locations as location and top-k claims (the kinds of the discriminating-claims issue) on the
    # per-layer and per-head rankings: exact places (within 0), the head as item layer * n_heads + head
    nh = spec["n_heads"]
    add(
        "hub-location",
        "efficiency.skip_profile",
        "location",
        f"early exit's skip profile peaks at the hub, L{pos['hub']}",
        layer=pos["hub"],
        within=0,
    )
    add(
        "head-location",
        "heads.head_profile",
        "location",
        f"the per-head ranking's top is L{pos['copy']} H{pos['copy_head']}",
        layer=pos["copy"] * nh + pos["copy_head"],
        within=0,
        n_heads=nh,
    )
    if spec["block"] == "serial":  # two MLPs write an answer: the key->value map, then the serial plant's
        add(
            "mlp-top2",
            "mlp.ranking",
            "top_k",
            f"the two strongest MLPs are L{pos['recall']} (planted_recall) and L{pos['serial']} (planted_serial)",
            layers=[pos["recall"], pos["serial"]],
            min_common=2,
        )
    else:  # a parallel block's serial MLP is silent: one MLP writes an answer
        add(
            "mlp-location",
            "mlp.ranking",
            "location",
            f"the strongest MLP is L{pos['recall']} (planted_recall)",
            layer=pos["recall"],
            within=0,
        )
    for layer in spec["identity_layers"]:
        add(
            f"identity-L{layer}",
            f"hub.skip.layer_kl.{layer}",
            "at_most",
            f"L{layer} is an exact identity",
            threshold=KL_ZERO,
        )
        add(
            f"identity-L{layer}-argmax",
            f"hub.skip.layer_argmax.{layer}",
            "at_least",
            f"skipping L{layer} keeps every argmax",
            threshold=1.0,
        )
    # the serial plant: the block layout decides what skipping its layer does (planted.json's "serial" truth)
    if spec["block"] == "serial":
        add(
            f"serial-breaks-L{pos['serial']}",
            f"hub.skip.layer_kl.{pos['serial']}",
            "at_least",
            f"skipping L{pos['serial']} breaks planted_serial (its MLP reads what its head H{pos['serial_head']} wrote)",
            threshold=KL_SERIAL,
        )
    else:
        add(
            f"serial-silent-L{pos['serial']}",
            f"hub.skip.layer_kl.{pos['serial']}",
            "at_most",
            f"L{pos['serial']} changes no answer (parallel block: its MLP never reads its head's gate)",
            threshold=KL_SILENT,
        )
        add(
            f"serial-silent-L{pos['serial']}-argmax",
            f"hub.skip.layer_argmax.{pos['serial']}",
            "at_least",
            f"skipping L{pos['serial']} keeps every argmax",
            threshold=1.0,
        )
    for name in ("hub", "copy", "recall"):
        add(
            f"breaks-L{pos[name]}",
            f"hub.skip.layer_kl.{pos[name]}",
            "at_least",
            f"skipping L{pos[name]} breaks planted_{name}",
            threshold=KL_BROKEN,
        )
    # early exit: the tabulated exits (skip 1, 2, 4 layers) keep exactly the families answered by then
    answered = spec["answer_layer"]
    for skip in (1, 2, 4):
        layer = n - 1 - skip
        done = sum(1 for f in FAMILIES if f not in answered or answered[f] <= layer) / len(FAMILIES)
        stat = f"efficiency.exit.skip{skip}.argmax_match"
        if done == 1.0:
            add(f"exit-L{layer}", stat, "at_least", f"an exit after L{layer} keeps every answer", threshold=1.0)
        else:
            add(
                f"exit-L{layer}",
                stat,
                "at_most",
                f"an exit after L{layer} loses the families answered later (at most {done:.3g} of argmaxes kept)",
                threshold=done + 0.05,
            )
    add(
        "steer-layer",
        "steering.best_layer",
        "at_most",
        f"steering works up to L{pos['steer'] - 1}",
        threshold=pos["steer"] - 1,
    )
    add("steer-boost", "steering.best_boost", "at_least", "the planted_steer direction raises 'Y'", threshold=0.5)
    add("steer-sign", "steering.best_strength", "at_least", "with a positive sign", threshold=0.5)
    add(
        "knockout-layer",
        "knockout.best_layer",
        "at_most",
        f"knocking out planted_recall is selective before its MLP (L{pos['recall']})",
        threshold=pos["recall"] - 1,
    )
    add("knockout-selectivity", "knockout.best_selectivity", "at_least", "and selective", threshold=5.0)
    return out


def _value(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return repr(v)
    return repr(v)


def render(layout: str = "llama", seed: int = 0) -> str:
    """The claims file of ``planted-<layout>`` at ``seed`` (TOML)."""
    spec = specification(layout, seed)
    lines = [
        f"# Generated from planted.json of {spec['model']} (seed {seed}) by atlas_core.planted_claims; "
        "never from a run.",
        "# Transfer and adapter ablation have no claim here: "
        + spec["truth"]["transfer"].removeprefix("no planted truth: "),
        "[meta]",
        f'label = "{spec["model"]}, seed {seed}: the planted mechanisms"',
        'source = "published"',
        f'profile = "{PROFILE}"',
        f'models = ["{spec["model"]}"]',
        "",
    ]
    for c in claims(layout, seed):
        lines.append("[[claim]]")
        lines += [f"{k} = {_value(v)}" for k, v in c.items()]
        lines.append("")
    return "\n".join(lines)
