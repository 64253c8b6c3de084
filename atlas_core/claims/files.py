"""Claims files: parsing and validating the TOML into ``Claim`` and ``ClaimsFile`` (the format is in
``atlas_core.claims``). Every problem is an AtlasError naming the file, the claim and the fix; a claim that
``atlas_core.claim_hygiene`` finds unable to fail is refused."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from atlas_core import AtlasError
from atlas_core.claim_hygiene import refusal
from atlas_core.data import CLAIMS_DIR
from atlas_core.profiles import PROFILES
from atlas_core.spec import groups, hypotheses, statistic_experiments, statistic_family
from atlas_core.verdicts import check_verdict

KINDS = ("value", "at_least", "at_most", "rank", "verdict", "location", "top_k", "profile")
SOURCES = ("published", "measured")
PROFILE_KINDS = ("location", "top_k", "profile")  # claims about where, on a statistic declared per layer or head
# Per claim kind, the sets of fields it needs (any one set; a location claim gives ``layer`` and ``within``,
# the top item within that many layers, or ``depth`` and ``tolerance``, the top's relative depth): the one
# table the schema (:func:`claims_schema`) and the parser read. Location, top-k and profile claims on a
# per-head statistic also give ``n_heads`` (items are layer * n_heads + head).
KIND_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "value": (("expected", "tolerance"),),
    "at_least": (("threshold",),),
    "at_most": (("threshold",),),
    "rank": (("max_rank",),),  # with ``layer``, or ``family`` on lora.ranking
    "verdict": (("expected_verdict",),),
    "location": (("layer", "within"), ("depth", "tolerance")),
    "top_k": (("layers", "min_common"),),
    "profile": (("items", "profile", "min_rho"),),
}


def claims_schema() -> dict:
    """The one declaration of a claims file's shape (JSON Schema): ``[meta]``, ``[thresholds.<H>]``, the
    ``[[claim]]`` array of tables with each field's type and each kind's required fields (:data:`KIND_FIELDS`),
    and the study's ``[study]`` tables (their own schema: ``report.study.study_schema``)."""
    from atlas_core.validation import INTEGER, NUMBER, OBJECT, STRING, TEXT

    def at_least(n: int) -> dict:
        return {"type": "integer", "minimum": n}

    claim = {
        "type": "object",
        "required": ["id", "statistic"],
        "additionalProperties": False,
        "properties": {
            "id": TEXT,
            "statistic": TEXT,
            "kind": {"enum": list(KINDS)},
            "source": {"enum": list(SOURCES)},
            "model": TEXT,
            "models": {"type": "array", "items": TEXT},
            "expected": NUMBER,
            "tolerance": {"type": "number", "minimum": 0},
            "threshold": NUMBER,
            "layer": INTEGER,
            "max_rank": at_least(1),
            "family": TEXT,
            "expected_verdict": TEXT,
            "description": STRING,
            "within": at_least(0),
            "depth": {"type": "number", "minimum": 0, "maximum": 1},
            "n_items": at_least(1),
            "n_heads": at_least(1),
            "layers": {"type": "array", "items": INTEGER},
            "min_common": at_least(1),
            "items": {"type": "array", "items": INTEGER},
            "profile": {"type": "array", "items": NUMBER},
            "min_rho": {"type": "number", "minimum": -1, "maximum": 1},
            "invariant": TEXT,
        },
        "allOf": [
            {
                "if": {"required": ["kind"], "properties": {"kind": {"const": kind}}},
                "then": {"anyOf": [{"required": list(need)} for need in alternatives]},
            }
            for kind, alternatives in KIND_FIELDS.items()
        ],
    }
    meta = {
        "type": "object",
        "properties": {
            "models": {"type": "array", "items": TEXT},
            "profile": TEXT,
            "source": {"enum": list(SOURCES)},
            "label": STRING,
            "citation": STRING,
            "generated": STRING,
            "provenance": OBJECT,
            "tolerance_rule": STRING,
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "meta": meta,
            "thresholds": {"type": "object", "additionalProperties": OBJECT},
            "claim": {"type": "array", "items": claim},
            "study": OBJECT,
        },
    }


@dataclass(frozen=True)
class Claim:
    """One checkable statement about a model (finding claims) or a model pair (hypothesis claims)."""

    id: str
    statistic: str
    kind: str
    models: tuple[str, ...]  # one model, or (small, large) for hypothesis claims
    source: str
    expected: float | None = None
    tolerance: float | None = None
    threshold: float | None = None
    layer: int | None = None  # rank: the layer ranked; value: the per-layer profile's value at this layer
    max_rank: int | None = None
    family: str | None = None  # rank claims on lora.ranking name a family instead of a layer
    expected_verdict: str | None = None
    description: str = ""
    within: int | None = None  # location: the top item within this many layers of ``layer``
    depth: float | None = None  # location: the top item's relative depth (within ``tolerance``)
    n_items: int | None = None  # location/top_k: how many items (layers, heads) the profile had
    layers: tuple[int, ...] | None = None  # top_k: the expected top-k set
    min_common: int | None = None  # top_k: how many of them the measured top-k must hold
    items: tuple[int, ...] | None = None  # profile: the items (layers, heads) of the expected profile
    profile: tuple[float, ...] | None = None  # profile: the expected values at ``items``
    min_rho: float | None = None  # profile: the least rank correlation with the expected profile
    n_heads: int | None = None  # location/top_k/profile on a per-head statistic: heads per layer
    invariant: str | None = None  # why any healthy model passes it (the claims audit lists such claims apart)

    @property
    def hypothesis(self) -> str | None:
        head = self.statistic.split(".")[0]
        return head if head in hypotheses() else None

    @property
    def group(self) -> str:
        """The pytest marker that selects this claim: ``h003``, ``finding_hub``, ... (or the group)."""
        if self.hypothesis:
            return self.hypothesis.lower()
        head = self.statistic.split(".")[0]
        spec = groups().get(head)
        return spec.marker if spec is not None and spec.marker else head

    @property
    def ranked(self) -> str:
        """What a rank claim ranks: ``layer 26`` or ``family json_schema``."""
        return f"family {self.family}" if self.family is not None else f"layer {self.layer}"

    @property
    def experiments(self) -> tuple[str, ...]:
        return statistic_experiments(self.statistic)

    def expectation(self) -> str:
        """The threshold in words, e.g. ``13.7 +- 2``, ``rank <= 3``, ``>= 0.5``, ``verdict rejected``."""
        if self.kind == "value":
            at = f"{self.item(self.layer)}: " if self.layer is not None else ""
            return f"{at}{self.expected:.4g} ± {self.tolerance:.3g}"
        if self.kind == "at_least":
            return f">= {self.threshold:.4g}"
        if self.kind == "at_most":
            return f"<= {self.threshold:.4g}"
        if self.kind == "rank":
            return f"{self.ranked} ranks <= {self.max_rank}"
        if self.kind == "location":
            if self.depth is not None:
                return f"top at relative depth {self.depth:.3g} ± {self.tolerance:.3g}"
            return f"top {self.item(self.layer)} ± {self.within} layers"
        if self.kind == "top_k":
            return f"top-{len(self.layers)} holds >= {self.min_common} of " + ", ".join(
                self.item(x) for x in self.layers
            )
        if self.kind == "profile":
            return f"rank correlation with the expected profile >= {self.min_rho:.3g}"
        return f"verdict {self.expected_verdict}"

    def item(self, x) -> str:
        """A layer (``L9``) or, on a per-head statistic, a head (``L0 H6``: items are layer * heads + head)."""
        from atlas_core.layers import item_name

        return item_name(x, {"n_heads": self.n_heads} if self.n_heads else None)


@dataclass
class ClaimsFile:
    path: Path
    meta: dict
    thresholds: dict[str, dict]
    claims: list[Claim]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", "any"))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.meta.get("models", ()))


def _bad(path, msg: str) -> AtlasError:
    return AtlasError(f"claims file {path}: {msg}")


def _num(path, cid, entry, key, required=True) -> float | None:
    v = entry.get(key)
    if v is None:
        if required:
            raise _bad(path, f"claim {cid!r} ({entry.get('kind')}) needs a number {key!r}")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(path, f"claim {cid!r}: {key} must be a number, got {v!r}")
    return float(v)


def parse_claim(entry: Mapping, meta: Mapping, path: Path | str = "<claims>") -> Claim:
    """One ``[[claim]]`` table into a validated ``Claim`` (errors name the file and the claim)."""
    cid = entry.get("id")
    if not cid or not isinstance(cid, str):
        raise _bad(path, f"a claim lacks a string 'id': {dict(entry)}")
    stat = entry.get("statistic")
    if not stat or not isinstance(stat, str):
        raise _bad(path, f"claim {cid!r} lacks 'statistic'")
    try:
        statistic_experiments(stat)
        statistic_family(stat)  # a statistic its experiment does not compute: refused now, not "n/a" after it ran
    except AtlasError as exc:
        raise _bad(path, f"claim {cid!r}: {exc}") from None
    kind = entry.get("kind", "verdict" if stat in hypotheses() else "value")
    if kind not in KINDS:
        raise _bad(path, f"claim {cid!r}: unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    source = entry.get("source", meta.get("source", "measured"))
    if source not in SOURCES:
        raise _bad(path, f"claim {cid!r}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    hyp = stat.split(".")[0] in hypotheses()
    if hyp:
        models = tuple(entry.get("models", meta.get("models", ())))
        if len(models) != 2:
            raise _bad(
                path,
                f"claim {cid!r} is about hypothesis {stat}: it needs two models (small, large) "
                "in 'models' or in [meta] models",
            )
    else:
        model = entry.get("model")
        if not model:
            raise _bad(path, f"claim {cid!r}: a finding claim names its 'model'")
        models = (str(model),)
    if kind == "verdict" and not hyp:
        raise _bad(path, f"claim {cid!r}: verdict claims are about a hypothesis (statistic H001..H008)")
    if kind == "rank" and hyp:
        raise _bad(path, f"claim {cid!r}: rank claims are about a ranking statistic (hub.ranking, mlp.ranking)")
    inv = entry.get("invariant")
    if inv is not None and (not isinstance(inv, str) or not inv.strip()):
        raise _bad(path, f"claim {cid!r}: 'invariant' states, as a string, why any healthy model passes the claim")
    c = Claim(
        id=cid,
        statistic=stat,
        kind=kind,
        models=models,
        source=source,
        description=str(entry.get("description", "")),
        invariant=inv,
    )
    if kind in PROFILE_KINDS:
        return _profile_claim(path, cid, entry, c, hyp)
    if kind == "value":
        c = _replace(c, expected=_num(path, cid, entry, "expected"), tolerance=_num(path, cid, entry, "tolerance"))
        if c.tolerance < 0:
            raise _bad(path, f"claim {cid!r}: tolerance must be >= 0")
        if entry.get("layer") is not None:  # a per-layer value: the profile's value at that (absolute) layer or head
            from atlas_core.spec import declaration

            d = declaration(stat)
            if hyp or d is None or not (d.axis == "layer" or d.at in ("layer", "head")):
                raise _bad(
                    path,
                    f"claim {cid!r}: a value claim with a 'layer' reads a statistic declared per layer "
                    f"(StatDecl axis 'layer') or read at an item (StatDecl at), not {stat!r}",
                )
            c = _replace(c, layer=_int(path, cid, entry, "layer"))
            if d.at == "head":
                c = _replace(c, n_heads=_int(path, cid, entry, "n_heads", 1))
    elif kind in ("at_least", "at_most"):
        c = _replace(c, threshold=_num(path, cid, entry, "threshold"))
    elif kind == "rank":
        if not stat.endswith(".ranking"):
            raise _bad(path, f"claim {cid!r}: rank claims read a '.ranking' statistic, not {stat!r}")
        layer, family, max_rank = entry.get("layer"), entry.get("family"), entry.get("max_rank")
        if stat == "lora.ranking":
            if not isinstance(family, str) or not isinstance(max_rank, int) or max_rank < 1:
                raise _bad(
                    path, f"claim {cid!r}: rank claims on lora.ranking need a string 'family' and 'max_rank' >= 1"
                )
        elif not isinstance(layer, int) or not isinstance(max_rank, int) or max_rank < 1:
            raise _bad(path, f"claim {cid!r}: rank claims need an integer 'layer' and 'max_rank' >= 1")
        c = _replace(
            c,
            layer=layer if stat != "lora.ranking" else None,
            family=family if stat == "lora.ranking" else None,
            max_rank=max_rank,
        )
    else:
        ev = entry.get("expected_verdict")
        if ev is None:
            raise _bad(path, f"claim {cid!r}: verdict claims need 'expected_verdict'")
        try:
            c = _replace(c, expected_verdict=check_verdict(ev))
        except AtlasError as exc:
            raise _bad(path, f"claim {cid!r}: {exc}") from None
    return c


def _int(path, cid, entry, key, low: int = 0, required: bool = True) -> int | None:
    v = entry.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _bad(path, f"claim {cid!r} ({entry.get('kind')}) needs an integer {key!r} >= {low}, got {v!r}")
    return v


def _list(path, cid, entry, key, typ) -> tuple:
    v = entry.get(key)
    ok = isinstance(v, list) and v and all(isinstance(x, typ) and not isinstance(x, bool) for x in v)
    if not ok:
        raise _bad(
            path,
            f"claim {cid!r} ({entry.get('kind')}) needs a non-empty list {key!r} of "
            f"{'integers' if typ is int else 'numbers'}, got {v!r}",
        )
    return tuple(typ(x) if typ is int else float(x) for x in v)


def _profile_claim(path, cid, entry, c: Claim, hyp: bool) -> Claim:
    """A location, top-k or profile claim (:data:`KIND_FIELDS`): about a finding statistic declared per layer
    or per head."""
    from atlas_core.spec import declaration

    d = declaration(c.statistic)
    if hyp or d is None or d.axis not in ("layer", "head"):
        raise _bad(
            path,
            f"claim {cid!r}: {c.kind} claims read a statistic declared per layer or per head "
            f"(StatDecl axis), not {c.statistic!r}",
        )
    if d.axis == "head":
        c = _replace(c, n_heads=_int(path, cid, entry, "n_heads", 1))
    if c.kind == "location":
        if entry.get("depth") is not None:
            depth, tol = _num(path, cid, entry, "depth"), _num(path, cid, entry, "tolerance")
            if not 0 <= depth <= 1 or tol < 0:
                raise _bad(path, f"claim {cid!r}: depth must lie in [0, 1] and tolerance be >= 0")
            return _replace(c, depth=depth, tolerance=tol, n_items=_int(path, cid, entry, "n_items", 1, False))
        return _replace(
            c,
            layer=_int(path, cid, entry, "layer"),
            within=_int(path, cid, entry, "within"),
            n_items=_int(path, cid, entry, "n_items", 1, False),
        )
    if c.kind == "top_k":
        layers = _list(path, cid, entry, "layers", int)
        k = _int(path, cid, entry, "min_common", 1)
        if k > len(layers):
            raise _bad(path, f"claim {cid!r}: min_common {k} exceeds the {len(layers)} layers listed")
        return _replace(c, layers=layers, min_common=k, n_items=_int(path, cid, entry, "n_items", 1, False))
    items, prof = _list(path, cid, entry, "items", int), _list(path, cid, entry, "profile", float)
    if len(items) != len(prof) or len(items) < 3:
        raise _bad(path, f"claim {cid!r}: 'items' and 'profile' must have the same length, at least 3")
    rho = _num(path, cid, entry, "min_rho")
    if not -1 <= rho <= 1:
        raise _bad(path, f"claim {cid!r}: min_rho must lie in [-1, 1]")
    # n_items: the profile is over absolute layers (heads) of a model with that many; one of another depth fails
    return _replace(c, items=items, profile=prof, min_rho=rho, n_items=_int(path, cid, entry, "n_items", 1, False))


def _replace(c: Claim, **kw) -> Claim:
    from dataclasses import replace

    return replace(c, **kw)


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate a claims file; every problem is an AtlasError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"claims file {path} does not exist; claims files live in {CLAIMS_DIR}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"not valid TOML ({exc})") from None
    from atlas_core.validation import check, entry_id

    check(
        data,
        claims_schema,
        f"claims file {path}",
        "each claim is a [[claim]] table (see atlas_core.claims)",
        entry=entry_id("claim"),
    )
    meta = dict(data.get("meta", {}))
    thresholds = {k: dict(v) for k, v in data.get("thresholds", {}).items()}
    for hid in thresholds:
        if hid not in hypotheses():
            raise _bad(path, f"[thresholds.{hid}]: unknown hypothesis; hypotheses are {', '.join(hypotheses())}")
    claims = [parse_claim(e, meta, path) for e in data.get("claim", [])]
    profile = PROFILES.get(str(meta.get("profile", "any")))
    sampled = profile is not None and profile.head_layers is not None
    for c in claims:
        why = refusal(c, thresholds, sampled)
        if why:
            raise _bad(path, f"claim {c.id!r} cannot fail: {why}")
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise _bad(path, f"duplicate claim id {c.id!r}")
        seen.add(c.id)
        if c.hypothesis:
            need = hypotheses()[c.hypothesis].required
            have = thresholds.get(c.hypothesis, {})
            missing = [k for k in need if k not in have]
            if missing:
                raise _bad(path, f"claim {c.id!r} needs [thresholds.{c.hypothesis}] with {', '.join(missing)}")
    return ClaimsFile(path, meta, thresholds, claims)


def claim_families(claim: Claim) -> set[str]:
    """The task families a claim's statistics name (a hypothesis claim: those its rule reads)."""
    stats = hypotheses()[claim.hypothesis].statistics if claim.hypothesis else (claim.statistic,)
    out = {f for f in map(statistic_family, stats) if f}
    return out | ({claim.family} if claim.family else set())


def check_families(cf: ClaimsFile, families: Iterable[str], how: str = "--tasks DIR / --families") -> None:
    """Every family the file's claims name is one the run loads: checked before the first experiment (a claim
    on a family no run measures would otherwise show "n/a" once the experiments ran)."""
    have = set(families)
    for c in cf.claims:
        missing = sorted(claim_families(c) - have)
        if missing:
            raise _bad(
                cf.path,
                f"claim {c.id!r} ({c.statistic}) names task famil{'y' if len(missing) == 1 else 'ies'} "
                f"{', '.join(missing)}, which this session does not load (it loads {', '.join(sorted(have))}); "
                f"add the family's file ({how}) or fix the claim",
            )


def default_claims_files(directory: str | Path = CLAIMS_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.toml"))


def same_model(claimed: str, actual: str) -> bool:
    """A claim about ``Qwen/Qwen2.5-1.5B`` applies to that hub id and to a folder named Qwen2.5-1.5B."""

    def base(s: str) -> str:
        return Path(str(s).rstrip("/")).name.lower()

    return claimed == actual or base(claimed) == base(actual)
