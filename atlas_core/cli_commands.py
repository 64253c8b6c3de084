"""The ``atlas`` subcommands: one handler per subcommand, each taking the parsed arguments
(:func:`atlas_core.cli.build_parser`) and returning the exit status. Kept apart from the parser and the entry
point; each handler imports what it needs when it runs, so that ``atlas --help`` loads no model code."""

from __future__ import annotations

import sys

from atlas_core import AtlasError

INFO_PROMPTS = ("The capital of Italy is", "The capital of France is", "def add(a, b):\n    return a")


def cmd_models_list(args) -> int:
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


def cmd_models_fetch(args) -> int:
    from atlas_core.models import cache_dir, fetch

    fetch(args.name, progress=True, repair=True)
    print(f"{args.name}: cached at {cache_dir(args.name)}")
    return 0


def cmd_models_verify(args) -> int:
    from atlas_core.models import OFFLINE_MODELS, is_cached
    from atlas_core.models.offline import spec_for, verify

    names = [args.name] if args.name else [n for n in OFFLINE_MODELS if is_cached(n)]
    for name in names:
        spec_for(name)
        if not is_cached(name):
            raise AtlasError(f"{name} is not cached; fetch it with `atlas models fetch {name}`")
        print(f"{name}: verified ({verify(name, full=True)})")
    return 0


def cmd_info(args) -> int:
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


def cmd_run(args) -> int:
    from atlas_core.orchestrate import RunPlan, run_plan
    from atlas_core.run_records import work_summary
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


def cmd_report(args) -> int:
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


def cmd_compare(args) -> int:
    from atlas_core.claims.comparison import compare_folders, format_comparison
    from atlas_core.experiments import parse_experiments

    experiments = parse_experiments(args.experiments) if args.experiments else None
    comp = compare_folders(args.baseline, args.candidate, experiments)
    print(format_comparison(comp.rows, comp))
    if comp.missing_message():
        print(f"atlas: {comp.missing_message()}", file=sys.stderr)
        return EXIT_MISSING
    return EXIT_DRIFT if comp.drifted else 0


def cmd_baseline(args) -> int:
    from atlas_core.baselines import BASELINES_DIR, export_baseline

    print(export_baseline(args.run_dir, args.into or BASELINES_DIR))
    return 0


def cmd_claims_write(args) -> int:
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


def cmd_claims_check(args) -> int:
    from atlas_core.claims.audit import check_on_runs

    result = check_on_runs(args.file, args.runs)
    print(result.table())
    return 0 if result.counts()[1] == 0 else 1


def cmd_claims_audit(args) -> int:
    from atlas_core.claims.audit import audit, baseline_runs

    result = audit(args.file, args.runs or baseline_runs(), seeds=range(args.seeds))
    print(result.table())
    return 0 if result.ok else 1


def cmd_golden(args) -> int:
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


def cmd_plan(args) -> int:
    from atlas_core.plan.build import lora_seconds_at, make_plan
    from atlas_core.plan.timing import compare, compare_memory, read_run

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
    print(f"peak memory: {plan.memory_source}")
    head = (
        f"{'experiment':18s} {'variants':>8s} {'tokens':>10s} {'GFLOP':>11s} {'sharded':>8s} {'weights':>8s} "
        f"{'caches':>7s} {'activ':>7s} {'LoRA':>6s} {'GiB':>8s} {'GPUs':>5s} {'GFLOP/s':>9s} {'of peak':>7s} "
        f"{'time s':>10s}"
    )
    checks, mem_checks = {}, {}
    measured = read_run(args.check) if args.check is not None else None
    # the predicted peak: with a calibration that measured memory, or beside a measured run
    show_peak = measured is not None or any(r.unplanned_bytes is not None for r in plan.rows)
    if measured is not None:
        checks = {c.experiment: c for c in compare({r.experiment: r.seconds for r in plan.rows}, measured)}
        head += f" {'measured':>9s} {'ratio':>6s}"
        mem_checks = {
            c.experiment: c for c in compare_memory({r.experiment: r.peak_bytes for r in plan.rows}, measured)
        }
    if show_peak:
        head += f" {'peak GiB':>8s}"
    if measured is not None:  # and the 1-minute load averages the calibration's and the checked experiment ran at
        head += f" {'measured':>8s} {'ratio':>6s} {'load cal/run':>12s}"
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
        c, mc = checks.get(r.experiment), mem_checks.get(r.experiment)
        if measured is not None:
            line += f" {c.measured:9.1f} {c.ratio:6.2f}" if c is not None else f" {'-':>9s} {'-':>6s}"
        if show_peak:
            line += f" {_gib(r.peak_bytes):>8s}"
        if measured is not None:  # the measured peak where the record has it (older records: none)
            line += f" {_gib(mc.measured):>8s} {mc.ratio:6.2f}" if mc is not None else f" {'-':>8s} {'-':>6s}"
            cal = plan.calibration.experiments.get(r.experiment) if plan.calibration is not None else None
            run = measured.experiments.get(r.experiment)
            load = f"{cal.load_text() if cal else '-'}/{run.load_text() if run else '-'}"
            line += f" {load:>12s}"
        print(line)
    checked_losses = measured.lora_losses if measured is not None else None
    if checked_losses is not None and len(checked_losses) != plan.lora_step_count and "lora_training" in checks:
        at = lora_seconds_at(plan, args.model, checked_losses, args.tokenizer)
        if at is not None:
            print(
                f"LoRA steps: the checked run trained {len(checked_losses)} (the plan counted {plan.lora_step_count}); "
                f"at its {len(checked_losses)} the prediction is {at:.1f} s, ratio "
                f"{at / checks['lora_training'].measured:.2f} (a diagnosis: when training stops is measured, not planned)"
            )
    gpus = max(r.gpus_per_replica for r in plan.rows)
    print(
        f"total {plan.seconds:.0f} s ({plan.seconds / 3600:.2f} h) on {plan.workers} replica(s) of {gpus} GPU(s) "
        f"({plan.workers * gpus} GPUs); 'sharded': the share of FLOP split over the workers"
    )
    return 0
