"""The ``atlas`` command: models, info, run, plan, report, compare, claims, golden."""

from __future__ import annotations

import argparse
import sys

from atlas_core import AtlasError

RESUME_NOTE = "finished experiments, saved sweeps and LoRA training state are kept"
INFO_PROMPTS = ("The capital of Italy is", "The capital of France is", "def add(a, b):\n    return a")


def _models_list(args) -> int:
    from atlas_core.models import OFFLINE_MODELS, is_cached
    from atlas_core.models.registry import DEFAULT_MODEL, PLANTED_MODELS, TINY_FAMILIES

    from atlas_core.integrity import CorruptFile
    from atlas_core.models.offline import verify

    for name, spec in OFFLINE_MODELS.items():
        state = "not fetched"
        if is_cached(name):
            try:
                verify(name)
                state = "cached"
            except CorruptFile:
                state = "damaged"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name:32s} {state:12s} {spec.description}{default}")
    for family in TINY_FAMILIES:
        print(f"{'tiny-' + family:32s} {'built-in':12s} deterministic random stock {family} (4 layers), for tests")
    for name in PLANTED_MODELS:
        print(
            f"{name:32s} {'built-in':12s} stock {name.removeprefix('planted-')} with hand-set mechanisms "
            "(planted.json says what each experiment must find)"
        )
    return 0


def _models_fetch(args) -> int:
    from atlas_core.models import cache_dir, fetch

    fetch(args.name, progress=True, repair=True)
    print(f"{args.name}: cached at {cache_dir(args.name)}")
    return 0


def _models_verify(args) -> int:
    from atlas_core.models import OFFLINE_MODELS, is_cached
    from atlas_core.models.offline import spec_for, verify

    names = [args.name] if args.name else [n for n in OFFLINE_MODELS if is_cached(n)]
    for name in names:
        spec_for(name)
        if not is_cached(name):
            raise AtlasError(f"{name} is not cached; fetch it with `atlas models fetch {name}`")
        print(f"{name}: verified ({verify(name, full=True)})")
    return 0


def _info(args) -> int:
    import torch

    from atlas_core.models import load
    from atlas_core.models.loader import describe
    from atlas_core.runner import Runner

    lm = load(args.model, device=args.device, dtype=args.dtype)
    print(describe(lm.info))
    runner = Runner(lm.model, lm.tokenizer, list(INFO_PROMPTS))
    top = runner.clean_logprobs.topk(3, dim=-1)
    for prompt, vals, ids in zip(INFO_PROMPTS, top.values, top.indices):
        preds = ", ".join(f"{lm.tokenizer.decode([int(i)])!r} {float(torch.exp(v)):.3f}" for v, i in zip(vals, ids))
        print(f"{prompt!r} -> {preds}")
    return 0


def _run(args) -> int:
    from atlas_core.orchestrate import RunPlan, run_plan, work_summary
    from atlas_core.runs import run_path

    families = [f.strip() for f in args.families.split(",")] if args.families else None
    ray_opts = {
        "workers": args.ray_workers,
        "threads": args.ray_threads,
        "gpus_per_worker": args.ray_gpus,
        "shard_variants": args.ray_shard,
    }
    ray = None
    if args.ray is None:
        given = [
            f"--ray-{o}" for o, v in zip(("workers", "threads", "gpus", "shard"), ray_opts.values()) if v is not None
        ]
        if given:
            raise AtlasError(
                f"{', '.join(given)} given without --ray, the flag {'they belong' if len(given) > 1 else 'it belongs'}"
                f" to: add --ray (or --ray ADDRESS) or drop {'them' if len(given) > 1 else 'it'}"
            )
    else:
        from atlas_core.distributed import RayConfig

        ray = RayConfig(
            address=None if args.ray == "local" else args.ray, **{k: v for k, v in ray_opts.items() if v is not None}
        )
    out = args.out or run_path(args.model, args.profile)
    store = run_plan(
        RunPlan(
            model=args.model,
            experiments=args.experiments,
            profile=args.profile,
            out=out,
            seed=args.seed,
            seeds=args.seeds,
            device=args.device,
            dtype=args.dtype,
            families=families,
            tasks=args.tasks,
            report=not args.no_report,
            ray=ray,
            device_map=args.device_map,
            max_memory=args.max_memory,
            screen=args.screen,
        )
    )
    print(work_summary(store))
    print(f"results: {store.root}")
    return 0


def _report(args) -> int:
    from atlas_core import report

    if args.compare:
        path = report.write_comparison(args.compare[0], args.compare[1], out=args.out)
    elif args.replication:
        if args.doc:
            from atlas_core.report.replication import write_replication_doc

            print(write_replication_doc(args.replication, args.doc))
            if not args.out:  # the Markdown alone: no replication.html inside the committed baselines
                return 0
        path = report.write_replication(args.replication, out=args.out)
    elif args.doc:
        raise AtlasError(
            "--doc writes the replication document: give the baselines too, "
            "e.g. atlas report --replication atlas_core/data/baselines --doc docs/REPLICATION.md"
        )
    else:
        if not args.run_dir:
            raise AtlasError("give a run folder (atlas report RUN_DIR) or --compare RUN_A RUN_B")
        path = report.write_report(args.run_dir, out=args.out)
    print(path)
    return 0


EXIT_DRIFT, EXIT_ERROR, EXIT_MISSING = 1, 2, 3  # `atlas compare`'s codes besides 0 (README lists them)


def _compare(args) -> int:
    from atlas_core.claims.comparison import compare_folders, format_comparison
    from atlas_core.experiments import parse_experiments

    experiments = parse_experiments(args.experiments) if args.experiments else None
    comp = compare_folders(args.baseline, args.candidate, experiments)
    print(format_comparison(comp.rows, comp))
    if comp.missing_message():
        print(f"atlas: {comp.missing_message()}", file=sys.stderr)
        return EXIT_MISSING
    return EXIT_DRIFT if comp.drifted else 0


def _baseline(args) -> int:
    from atlas_core.baselines import BASELINES_DIR, export_baseline

    print(export_baseline(args.run_dir, args.into or BASELINES_DIR))
    return 0


def _claims_write(args) -> int:
    from atlas_core.claims import load_run, write_claims
    from atlas_core.spec import experiments, hypotheses

    path = write_claims(args.runs, args.out, label=args.label, substitutes=args.substitute)
    print(path)
    runs = [load_run(d) for d in args.runs]
    for run in runs:  # a partial run writes fewer claims: say which experiments gave none, and how to add them
        lacking = [n for n, s in experiments().items() if (s.claims or s.ranked) and not run.has(n)]
        if lacking:
            print(
                f"atlas: note: {run.root} lacks {', '.join(lacking)}: no claims of theirs were written; compute "
                f"them with `atlas run --experiments {','.join(lacking)} --out {run.root}` and write again",
                file=sys.stderr,
            )
    if len(runs) == 2:
        unjudged = [h for h, spec in hypotheses().items() if not all(r.has(e) for r in runs for e in spec.experiments)]
        if unjudged:
            print(
                f"atlas: note: no verdict claims for {', '.join(unjudged)}: their experiments are not in both runs",
                file=sys.stderr,
            )
    return 0


def _claims_check(args) -> int:
    from atlas_core.claims.audit import check_on_runs

    result = check_on_runs(args.file, args.runs)
    print(result.table())
    return 0 if result.counts()[1] == 0 else 1


def _claims_audit(args) -> int:
    from atlas_core.claims.audit import audit, baseline_runs

    result = audit(args.file, args.runs or baseline_runs(), seeds=range(args.seeds))
    print(result.table())
    return 0 if result.ok else 1


def _golden(args) -> int:
    """``atlas golden check`` recomputes the golden slice and lists every value that moved; ``write``
    rewrites the record (a deliberate change of an experiment's definition: say why in the commit)."""
    from atlas_core import golden
    from atlas_core.models import load

    path = golden.golden_path(args.model)
    experiments = [e.strip() for e in args.experiments.split(",")] if args.experiments else None
    lm = load(args.model, device="cpu", dtype="float32")  # the record is fp32 CPU numbers
    if args.action == "check":
        mismatches = golden.check(lm, path, experiments, progress=True)
        for m in mismatches[:50]:
            print(m)
        if mismatches:
            print(f"{len(mismatches)} value(s) differ from {path}", file=sys.stderr)
            return 1
        print(f"golden slice matches {path}")
        return 0
    old = golden.read(path) if path.is_file() else {}
    new = golden.compute(
        lm,
        experiments,
        progress=True,  # the others' recorded results feed the ones rerun
        shared={n: s.result for n, s in old.items() if experiments and n not in experiments},
    )
    merged = {**old, **golden.merge_codes(old, new)}
    if args.accept_unrecorded:
        for s in merged.values():
            if golden.UNRECORDED not in s.codes:
                s.codes.append(golden.UNRECORDED)
    golden.write(path, merged, lm.info.name)
    for name in new:
        state = (
            "new"
            if name not in old
            else "values changed: records made by earlier code are stale"
            if golden.compare_slice(name, old[name], new[name])
            else "values unchanged"
        )
        print(f"{name}: {state} (codes {', '.join(merged[name].codes)})")
    print(f"wrote {path}")
    return 0


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _plan(args) -> int:
    from atlas_core.plan.build import make_plan
    from atlas_core.plan.timing import compare, read_run

    if args.check is not None:
        read_run(args.check)  # a bad folder fails before the plan's work
    plan = make_plan(
        args.model,
        args.profile,
        gpu_memory=args.gpu_memory,
        workers=args.workers,
        flops_per_s=args.flops_per_s,
        chunk=args.chunk,
        dtype=args.dtype,
        calibration=args.calibrate,
        tokenizer=args.tokenizer,
    )
    s = plan.model
    print(
        f"{s.name}: {s.family}, {s.params / 1e9:.2f}B parameters, {s.n_layers} layers, {s.n_heads} heads "
        f"({s.n_kv_heads} KV) x {s.head_dim}, d_model {s.d_model}, intermediate {s.intermediate}, vocab {s.vocab} "
        "(built on the meta device)"
    )
    print(
        f"profile {plan.profile}, {plan.dtype}; prompt tokens by {plan.tokenizer}'s tokenizer; sweep chunk "
        f"{plan.chunk} rows; LoRA steps: {plan.lora_steps}"
    )
    print(
        f"GPU memory {plan.gpu_bytes / 1e9:.0f} GB, {100 * plan.usable:.0f}% usable; {plan.workers} worker(s) "
        f"(replicas); rate: {plan.rows[0].rate.source}"
    )
    head = (
        f"{'experiment':18s} {'variants':>8s} {'tokens':>10s} {'GFLOP':>11s} {'sharded':>8s} {'weights':>8s} "
        f"{'caches':>7s} {'activ':>7s} {'LoRA':>6s} {'GiB':>8s} {'GPUs':>5s} {'GFLOP/s':>9s} {'of peak':>7s} "
        f"{'time s':>10s}"
    )
    checks = {}
    if args.check is not None:
        checks = {c.experiment: c for c in compare({r.experiment: r.seconds for r in plan.rows}, read_run(args.check))}
        head += f" {'measured':>9s} {'ratio':>6s}"
    print(head)
    for r in plan.rows:
        m = r.memory
        frac = f"{100 * r.rate.fraction_of_peak:.1f}%" if r.rate.fraction_of_peak is not None else "-"
        shard = f"{100 * r.sharded_flop / r.flop:.0f}%" if r.flop else "-"
        line = (
            f"{r.experiment:18s} {r.variants:8d} {r.tokens:10d} {r.flop / 1e9:11.1f} {shard:>8s} "
            f"{_gib(m.weights):>8s} {_gib(m.caches):>7s} {_gib(m.activations):>7s} {_gib(m.lora):>6s} "
            f"{_gib(m.total):>8s} {r.gpus_per_replica:5d} {r.rate.flops_per_s / 1e9:9.1f} {frac:>7s} "
            f"{r.seconds:10.1f}"
        )
        c = checks.get(r.experiment)
        if c is not None:
            line += f" {c.measured_s:9.1f} {c.ratio:6.2f}"
        print(line)
    gpus = max(r.gpus_per_replica for r in plan.rows)
    print(
        f"total {plan.seconds:.0f} s ({plan.seconds / 3600:.2f} h) on {plan.workers} replica(s) of {gpus} GPU(s) "
        f"({plan.workers * gpus} GPUs); 'sharded': the share of FLOP split over the workers (the base model's sweeps)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from atlas_core.models.registry import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="atlas", description="A causal-intervention atlas of transformer LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list or fetch the offline models").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="registered models and whether they are cached").set_defaults(fn=_models_list)
    f = models.add_parser("fetch", help="download, verify, convert and cache a registered model")
    f.add_argument("name")
    f.set_defaults(fn=_models_fetch)
    v = models.add_parser("verify", help="hash every file of cached models against what was recorded at fetch")
    v.add_argument("name", nargs="?", help="one registered model (default: every cached one)")
    v.set_defaults(fn=_models_verify)

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
    i.set_defaults(fn=_info)

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
    r.set_defaults(fn=_run)

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
    rep.set_defaults(fn=_report)

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
    c.set_defaults(fn=_compare)

    b = sub.add_parser("baseline", help="export a finished run's records, compact, as a committed baseline")
    b.add_argument("run_dir")
    b.add_argument("--into", default=None, help="baselines folder (default atlas_core/data/baselines)")
    b.set_defaults(fn=_baseline)

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
    w.set_defaults(fn=_claims_write)
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
    a.set_defaults(fn=_claims_audit)
    ck = cl.add_parser(
        "check",
        help="evaluate a claims file on other runs of its models (another dtype, device or "
        "thread count); claims whose experiments a run lacks are listed as not "
        "evaluated; exit 1 when a claim fails",
    )
    ck.add_argument("file")
    ck.add_argument("--runs", nargs="+", required=True, help="one run folder per claimed model")
    ck.set_defaults(fn=_claims_check)

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
    g.set_defaults(fn=_golden)
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
    pl.set_defaults(fn=_plan)

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
