"""Claims files: what a model (or a pair of models) is expected to show, checked against stored runs.

A claims file (TOML, shipped under ``atlas_core/data/claims/``) holds::

    [meta]
    label = "..."                 # what the claims are
    source = "published"          # or "measured" (written by ``atlas claims write`` from runs)
    profile = "ci"                # the profile the claims were measured at ("any": not tied to one)
    models = ["SMALL", "LARGE"]   # model names (registered names, hub ids or folder names), small first

    [thresholds.H001]             # the decision rules' thresholds (atlas_core.verdicts)
    tolerance = 0.1

    [[claim]]
    id = "..."                    # unique in the file
    statistic = "hub.ranking"     # a finding statistic (atlas_core.verdicts) or a hypothesis id "H003"
    kind = "rank"                 # value | at_least | at_most | rank | verdict
    model = "LARGE"               # finding claims: the model; hypothesis claims use meta.models
    layer = 26                    # rank: the layer (or family = "json_schema" for lora.ranking) ...
    max_rank = 3                  # ... must rank within the top 3
    expected = 13.70              # value: expected +- tolerance
    tolerance = 2.0
    threshold = 0.5               # at_least / at_most
    expected_verdict = "rejected" # verdict

Every claim must be able to fail: ``load_claims`` refuses, naming it, a claim that
``atlas_core.claim_hygiene`` finds true by construction or accepting both sides of a decision threshold or
its statistic's whole plausible range; ``write_claims`` tightens or drops such claims and says which.

A module per job: ``files`` parses and validates claims files (``load_claims``); ``evaluation`` checks
one claim against the statistics of the runs (``evaluate``); ``writing`` writes a claims file from stored
runs (``write_claims``), each claim's bound from their bootstrap intervals set by ``bounds``; ``comparison`` compares every finding
statistic of two runs (``compare_runs``, regression across model versions) and prints it
(``format_comparison``). Runs are read through :mod:`atlas_core.runs` (``load_run``, re-exported here).
"""

from atlas_core.claims.comparison import ComparisonRow, compare_runs, compare_stats, format_comparison
from atlas_core.claims.evaluation import Evaluation, evaluate, tolerance
from atlas_core.claims.files import (
    CLAIMS_DIR,
    KINDS,
    SOURCES,
    Claim,
    ClaimsFile,
    default_claims_files,
    load_claims,
    parse_claim,
    same_model,
)
from atlas_core.claims.writing import write_claims
from atlas_core.runs import StoredRun, load_run

__all__ = [
    "CLAIMS_DIR",
    "KINDS",
    "SOURCES",
    "Claim",
    "ClaimsFile",
    "ComparisonRow",
    "Evaluation",
    "StoredRun",
    "compare_runs",
    "compare_stats",
    "default_claims_files",
    "evaluate",
    "format_comparison",
    "load_claims",
    "load_run",
    "parse_claim",
    "same_model",
    "tolerance",
    "write_claims",
]
