"""Claim hygiene (atlas_core.claim_hygiene): a claim that cannot fail is refused when its file loads.

- The committed claims files hold no claim the hygiene check refuses.
- Each refusal, shown on the claim the issue found in the committed files: loading a file with it
  fails naming the claim and the reason; the same claim made falsifiable loads.
"""

from __future__ import annotations

import pytest

from atlas_core import AtlasError
from atlas_core.claim_hygiene import refusal
from atlas_core.claims import default_claims_files, load_claims, parse_claim
from atlas_core.spec import default_thresholds

PAIR = ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]


def test_committed_claims_files_hold_no_refused_claim():
    files = default_claims_files()
    assert len(files) >= 3
    for path in files:
        cf = load_claims(path)  # refuses on the first claim that cannot fail
        sampled = cf.profile == "ci"
        assert [c.id for c in cf.claims if refusal(c, cf.thresholds, sampled)] == [], path


def _toml(meta_profile: str, entry: dict) -> str:
    th = "".join(
        f"[thresholds.{h}]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in t.items())
        for h, t in default_thresholds().items()
    )
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in entry.items())
    return f'[meta]\nprofile = "{meta_profile}"\nmodels = {PAIR!r}\n'.replace("'", '"') + th + "[[claim]]\n" + body


M = PAIR[1]
# (what is refused, the claim as the committed files held it, its falsifiable form, the message)
CASES = [
    (
        "true by construction",
        {
            "id": f"{M}:transfer.final_recovery",
            "statistic": "transfer.final_recovery",
            "model": M,
            "kind": "value",
            "expected": 1.0,
            "tolerance": 0.1,
        },
        {
            "id": f"{M}:transfer.zone_final_fraction",
            "statistic": "transfer.zone_final_fraction",
            "model": M,
            "kind": "value",
            "expected": 0.25,
            "tolerance": 0.025,
        },
        "transfer.final_recovery is true by construction",
    ),
    (
        "a tolerance spanning the decision threshold (H008: -0.0455 ± 1.00857)",
        {"id": "H008.statistic", "statistic": "H008", "kind": "value", "expected": -0.0455, "tolerance": 1.00857},
        {"id": "H008.statistic", "statistic": "H008", "kind": "value", "expected": -0.0455, "tolerance": 0.04},
        r"accepts \[-1.054, 0.9631\], which holds the H008 decision threshold 0.3",
    ),
    (
        "a tolerance admitting no effect (ci: steering.best_boost 0.18 ± 0.55)",
        {
            "id": f"{M}:steering.best_boost",
            "statistic": "steering.best_boost",
            "model": M,
            "kind": "value",
            "expected": 0.1827,
            "tolerance": 0.5513,
        },
        {
            "id": f"{M}:steering.best_boost",
            "statistic": "steering.best_boost",
            "model": M,
            "kind": "value",
            "expected": 0.2532,
            "tolerance": 0.0642,
        },
        "holds 0 \\(no effect\\) though it expects 0.1827",
    ),
    (
        "the whole plausible range",
        {
            "id": f"{M}:heads.max_layer_depth",
            "statistic": "heads.max_layer_depth",
            "model": M,
            "kind": "value",
            "expected": 0.5,
            "tolerance": 0.5,
        },
        {
            "id": f"{M}:heads.max_layer_depth",
            "statistic": "heads.max_layer_depth",
            "model": M,
            "kind": "value",
            "expected": 0.037,
            "tolerance": 0.05,
        },
        r"the whole plausible range \[0, 1\] of heads.max_layer_depth",
    ),
    (
        "an at_least below the null",
        {
            "id": f"{M}:knockout.skill_drop",
            "statistic": "knockout.skill_drop",
            "model": M,
            "kind": "at_least",
            "threshold": -0.1,
        },
        {
            "id": f"{M}:knockout.skill_drop",
            "statistic": "knockout.skill_drop",
            "model": M,
            "kind": "at_least",
            "threshold": 0.1,
        },
        "which holds 0 \\(no effect\\) and less",
    ),
    (
        "a rank admitting every family",
        {
            "id": f"{M}:lora.rank.copying",
            "statistic": "lora.ranking",
            "model": M,
            "kind": "rank",
            "family": "copying",
            "max_rank": 8,
        },
        {
            "id": f"{M}:lora.rank.copying",
            "statistic": "lora.ranking",
            "model": M,
            "kind": "rank",
            "family": "copying",
            "max_rank": 3,
        },
        "max_rank 8 admits every one of the 8 families",
    ),
    (
        "a location admitting every layer off centre (written from Coder-1.5B's full baseline: L21 +- 21 of 28)",
        {
            "id": f"{M}:adapter.layer_profile.top",
            "statistic": "adapter.layer_profile",
            "model": M,
            "kind": "location",
            "layer": 21,
            "within": 21,
            "n_items": 28,
        },
        {
            "id": f"{M}:adapter.layer_profile.top",
            "statistic": "adapter.layer_profile",
            "model": M,
            "kind": "location",
            "layer": 21,
            "within": 20,
            "n_items": 28,
        },
        "within ± 21 layers of L21 admits every layer of 28",
    ),
    (
        "a head location admitting every layer",
        {
            "id": f"{M}:heads.head_profile.top",
            "statistic": "heads.head_profile",
            "model": M,
            "kind": "location",
            "layer": 2 * 12 + 5,
            "within": 25,
            "n_items": 28 * 12,
            "n_heads": 12,
        },
        {
            "id": f"{M}:heads.head_profile.top",
            "statistic": "heads.head_profile",
            "model": M,
            "kind": "location",
            "layer": 2 * 12 + 5,
            "within": 24,
            "n_items": 28 * 12,
            "n_heads": 12,
        },
        "within ± 25 layers of L2 admits every layer of 28",
    ),
]


@pytest.mark.parametrize("what, bad, good, message", CASES, ids=[c[0].split(" (")[0] for c in CASES])
def test_a_claim_that_cannot_fail_is_refused_by_name(what, bad, good, message, tmp_path):
    p = tmp_path / "claims.toml"
    p.write_text(_toml("full", bad))
    with pytest.raises(AtlasError, match=f"claim '{bad['id']}' cannot fail: .*{message}") as exc:
        load_claims(p)
    print(f"{what}: {exc.value}")
    p.write_text(_toml("full", good))
    assert [c.id for c in load_claims(p).claims] == [good["id"]]


def test_h002_claims_are_refused_where_head_layers_are_sampled(tmp_path):
    """The ci profile ablates the heads of 3 layers: H002 is declared not measurable there."""
    p = tmp_path / "claims.toml"
    p.write_text(_toml("ci", {"id": "H002", "statistic": "H002", "kind": "verdict", "expected_verdict": "rejected"}))
    with pytest.raises(AtlasError, match="claim 'H002' cannot fail: H002 is not measurable at this profile"):
        load_claims(p)
    p.write_text(_toml("full", {"id": "H002", "statistic": "H002", "kind": "verdict", "expected_verdict": "rejected"}))
    assert load_claims(p).claims[0].id == "H002"


@pytest.mark.parametrize(
    "kind, threshold, refused",
    [("at_most", 0.1, False), ("at_least", 0.1, True), ("at_least", 0.6, True), ("at_least", 1.0, False)],
)
def test_one_sided_hypothesis_claims_may_end_on_a_boundary_not_cross_one(kind, threshold, refused):
    """H003 boundaries: 0.5 and 1. ``at_most 0.1`` is the rejected side, ``at_least 1`` the supported one;
    ``at_least 0.1`` and ``at_least 0.6`` pass on either side of a boundary."""
    c = parse_claim(
        {"id": "H003.statistic", "statistic": "H003", "kind": kind, "threshold": threshold}, {"models": PAIR}
    )
    assert (refusal(c, default_thresholds()) is not None) == refused


def test_write_tightens_a_claim_to_its_interval_or_drops_it():
    """``write_claims``'s writer: a value claim whose floor-or-relative tolerance admits no effect is
    tightened to k x its bootstrap half-width when that excludes the null, and dropped when it does not."""
    from atlas_core.claims.writing import _Writer

    w = _Writer(default_thresholds(), False, {"source": "measured", "profile": "full", "models": PAIR})
    entry = {
        "id": "m:steering.best_boost",
        "model": M,
        "statistic": "steering.best_boost",
        "kind": "value",
        "expected": 0.18,
        "tolerance": 0.2,
    }
    w.add(entry, tight=0.1)  # [0.08, 0.28] excludes 0: kept, tightened
    w.add({**entry, "id": "m:other"}, tight=0.19)  # [-0.01, 0.37] still holds 0: dropped
    w.add({**entry, "id": "m:fine", "tolerance": 0.05}, tight=0.02)  # falsifiable as written: kept as written
    assert w.counts == {"kept": 2, "tightened": 1, "dropped": 1}
    assert w.notes[0].startswith("tightened m:steering.best_boost: ± 0.2 -> ± 0.1 (accepts [-0.02, 0.38]")
    assert w.notes[1].startswith("dropped m:other: accepts [-0.02, 0.38], which holds 0 (no effect)")
    assert "tolerance = 0.1\n" in "\n".join(w.body) and "tolerance = 0.05\n" in "\n".join(w.body)
