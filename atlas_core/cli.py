"""The ``atlas`` command: models, info, run, plan, report, compare, claims, golden. The parser and the entry
point; each subcommand's handler is in :mod:`atlas_core.cli_commands`."""

from __future__ import annotations

import argparse
import sys

from atlas_core import AtlasError
from atlas_core import cli_commands as commands

RESUME_NOTE = "finished experiments, saved sweeps and LoRA training state are kept"


def build_parser() -> argparse.ArgumentParser:
    from atlas_core.models.registry import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="atlas", description="A causal-intervention atlas of transformer LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list or fetch the offline models").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="registered models and whether they are cached").set_defaults(
        fn=commands.cmd_models_list
    )
    f = models.add_parser("fetch", help="download, verify, convert and cache a registered model")
    f.add_argument("name")
    f.set_defaults(fn=commands.cmd_models_fetch)
    v = models.add_parser("verify", help="hash every file of cached models against what was recorded at fetch")
    v.add_argument("name", nargs="?", help="one registered model (default: every cached one)")
    v.set_defaults(fn=commands.cmd_models_verify)

    def model_args(sp):
        sp.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            help=f"registered name, local dir, hub id or .gguf (default {DEFAULT_MODEL})",
        )
        sp.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if present)")
        sp.add_argument(
            "--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)"
        )

    i = sub.add_parser("info", help="load a model, print its facts and a few predictions")
    model_args(i)
    i.set_defaults(fn=commands.cmd_info)

    r = sub.add_parser("run", help="run experiments and store results")
    model_args(r)
    r.add_argument("--experiments", default="all", help="all, or a comma list")
    r.add_argument("--profile", default="ci", help="smoke | ci | full | exhaustive")
    r.add_argument("--out", default=None, help="run folder (default reports/runs/MODEL-PROFILE)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seeds", type=int, default=1, help="repeat seed-dependent experiments with N seeds")
    r.add_argument(
        "--families",
        default=None,
        help="comma list of task families (default: the eight built-in ones and those of --tasks)",
    )
    r.add_argument(
        "--tasks",
        default=None,
        metavar="DIR",
        help="a folder of <family>.json files (the built-in families' format) added to the built-in ones",
    )
    r.add_argument("--no-report", action="store_true", help="skip writing atlas.html at the end")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="shard sweeps over Ray actors; ADDRESS of an existing cluster (auto, ray://host:10001), "
        "omitted: a local cluster started and stopped by the run (needs the ray extra)",
    )
    r.add_argument("--ray-workers", type=int, default=None, help="with --ray: actors, each a model replica (default 2)")
    r.add_argument("--ray-threads", type=int, default=None, help="with --ray: torch threads per actor (default 1)")
    r.add_argument("--ray-gpus", type=float, default=None, help="with --ray: GPUs per actor (1 on a GPU cluster)")
    r.add_argument(
        "--device-map",
        default=None,
        choices=("auto",),
        help="place layers across devices with accelerate (GPUs, then CPU, then disk), for models "
        "larger than one device (needs the multidevice extra)",
    )
    r.add_argument(
        "--max-memory",
        default=None,
        metavar="DEV=SIZE,...",
        help="with --device-map: per-device limits, e.g. 0=20GiB,1=20GiB,cpu=60GiB",
    )
    r.add_argument(
        "--screen",
        default=None,
        metavar="METHOD",
        help="head ablation screened by attribution patching (atp), then verified by exact ablation until "
        "its top 10 is settled (default: every head ablated exactly)",
    )
    r.add_argument("--ray-shard", type=int, default=None, help="with --ray: variants per shard (default: ~4 per actor)")
    r.set_defaults(fn=commands.cmd_run)

    rep = sub.add_parser("report", help="write the HTML atlas for a run, a comparison or the replication")
    rep.add_argument("run_dir", nargs="?")
    rep.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"))
    rep.add_argument("--replication", default=None, metavar="BASELINES_DIR")
    rep.add_argument("--out", default=None, help="HTML output path")
    rep.add_argument(
        "--doc",
        default=None,
        metavar="MARKDOWN",
        help="with --replication: write the replication document (docs/REPLICATION.md) there; "
        "the HTML too only when --out is given",
    )
    rep.set_defaults(fn=commands.cmd_report)

    c = sub.add_parser(
        "compare",
        help="compare every finding of a candidate run with a baseline run; exit 1 on "
        "drift, 3 when the candidate lacks what the baseline has",
    )
    c.add_argument("baseline", help="the baseline run folder (A)")
    c.add_argument("candidate", help="the candidate run folder (B), checked against the baseline")
    c.add_argument(
        "--experiments",
        default=None,
        help="comma list: compare only these experiments' statistics (default: all the baseline holds)",
    )
    c.set_defaults(fn=commands.cmd_compare)

    b = sub.add_parser("baseline", help="export a finished run's records, compact, as a committed baseline")
    b.add_argument("run_dir")
    b.add_argument("--into", default=None, help="baselines folder (default atlas_core/data/baselines)")
    b.set_defaults(fn=commands.cmd_baseline)

    cl = sub.add_parser("claims", help="claims files").add_subparsers(dest="action", required=True)
    w = cl.add_parser("write", help="write a claims file from stored runs, tolerances from bootstrap intervals")
    w.add_argument("runs", nargs="+")
    w.add_argument("--out", required=True)
    w.add_argument("--label", default=None)
    w.add_argument(
        "--substitute",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="with a pair: other models' runs of the same profile, fed in place of each claimed model "
        "by the audit that drops claims no wrong input fails (default: the committed baselines)",
    )
    w.set_defaults(fn=commands.cmd_claims_write)
    a = cl.add_parser(
        "audit",
        help="evaluate a claims file on wrong evidence (models swapped or substituted, "
        "the same model twice, layers reversed and shuffled); exit 1 when a claim "
        "that is not a declared invariant passes every wrong input",
    )
    a.add_argument("file")
    a.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="run folders of the claimed models and others to substitute (default: the committed baselines)",
    )
    a.add_argument("--seeds", type=int, default=5, help="shuffles fed (seeds 0..N-1, default 5)")
    a.set_defaults(fn=commands.cmd_claims_audit)
    ck = cl.add_parser(
        "check",
        help="evaluate a claims file on other runs of its models (another dtype, device or "
        "thread count); claims whose experiments a run lacks are listed as not "
        "evaluated; exit 1 when a claim fails",
    )
    ck.add_argument("file")
    ck.add_argument("--runs", nargs="+", required=True, help="one run folder per claimed model")
    ck.set_defaults(fn=commands.cmd_claims_check)

    g = sub.add_parser("golden", help="check or rewrite the golden slice record (atlas_core/data/golden)")
    g.add_argument("action", choices=("check", "write"))
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"the record's model (default {DEFAULT_MODEL})")
    g.add_argument("--experiments", default=None, help="comma list (default: all)")
    g.add_argument(
        "--accept-unrecorded",
        action="store_true",
        help="with write: let records that carry no code fingerprint (written before fingerprints "
        "existed) stand while the golden values hold",
    )
    g.set_defaults(fn=commands.cmd_golden)
    pl = sub.add_parser(
        "plan",
        help="before a run: work, memory per replica, GPUs and time per experiment of a "
        "profile, for any Hugging Face config (built on the meta device)",
    )
    pl.add_argument(
        "model",
        help="registered or tiny model, a shipped plan config (llama-3.1-8b, llama-3.1-70b, "
        "qwen2.5-32b, gemma-2-27b), or a config.json (or its folder)",
    )
    pl.add_argument("--profile", default="full", help="smoke | ci | full | exhaustive (default full)")
    pl.add_argument("--gpu-memory", default="141GB", help="memory of one GPU (default 141GB, an H200)")
    pl.add_argument("--workers", type=int, default=1, help="model replicas sharing the sweeps (default 1)")
    pl.add_argument(
        "--flops-per-s",
        type=float,
        default=None,
        help="achieved FLOP/s for every experiment (default: --calibrate's rates, else this machine's "
        "measured matmul peak)",
    )
    pl.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="rows per sweep forward (default: the runner's, from the profile's memory budget)",
    )
    pl.add_argument("--dtype", default="bfloat16", help="float32 | bfloat16 | float16 (default bfloat16)")
    pl.add_argument(
        "--calibrate",
        default=None,
        metavar="RUN",
        help="a measured run folder (or committed baseline): each experiment's achieved FLOP/s",
    )
    pl.add_argument(
        "--tokenizer",
        default=None,
        help="stand-in tokenizer for a model without its own here (default qwen2.5-coder-0.5b-instruct)",
    )
    pl.add_argument(
        "--check",
        default=None,
        metavar="RUN",
        help="a measured run of this model and profile: print its times beside the prediction",
    )
    pl.set_defaults(fn=commands.cmd_plan)

    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except AtlasError as exc:
        print(f"atlas: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment: a full disk, a permission, a folder removed under us
        print(
            f"atlas: error: {exc}; free the space or fix the permission and run the same command again", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print(f"\natlas: interrupted; run the same command again to resume ({RESUME_NOTE})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
