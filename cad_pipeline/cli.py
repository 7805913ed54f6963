"""`cad-pipeline`: the pipeline's operations headless."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

EXIT_VALID, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
MODEL_FILE = re.compile(r"^\d{8}(_\d+)?\.json$")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        parser.error(str(error))


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cad-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="read and build one DeepCAD JSON file and report what it is")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_inspect)

    sample = commands.add_parser("sample", help="write a generated sample corpus in DeepCAD's layout")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--models", type=int, default=1300)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_sample)

    bench = commands.add_parser("bench", help="throughput benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    build = benches.add_parser("build", help="parse+build throughput in models per second per core")
    build.add_argument("--corpus", type=Path, required=True, help="a DeepCAD corpus or a folder of <id>.json files")
    build.add_argument("--seconds", type=float, default=10.0, help="time per measurement, split into 5 rounds")
    build.add_argument("--workers", type=int, default=0, help="processes for the all-cores figure (0: every core)")
    build.set_defaults(handler=_bench_build)

    materialize = commands.add_parser("materialize", help="materialize assets for one scale without the UI")
    materialize.add_argument("--scale", required=True)
    materialize.add_argument("--select", default="*", help="comma-separated asset names (default: every asset)")
    materialize.set_defaults(handler=_materialize)
    return parser


def _inspect(args) -> int:
    from cad_pipeline.cad.inspect import inspect_file

    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
    report = inspect_file(args.file)
    if args.json:
        print(json.dumps(report.to_json()))
    elif report.valid:
        print(f"{report.id}: valid, {report.n_extrudes} extrudes, {report.n_curves} curves")
        print(f"  volume {report.volume:.6g} m^3, area {report.area:.6g} m^2")
        print(f"  bbox {tuple(round(v, 9) for v in report.bbox_min)} .. {tuple(round(v, 9) for v in report.bbox_max)} m")
    else:
        print(f"{report.id}: rejected: {report.reason}")
    return EXIT_VALID if report.valid else EXIT_REJECTED


def _sample(args) -> int:
    from cad_pipeline.cad.sample_corpus import write_corpus

    if args.models < 1:
        raise UsageError("--models must be at least 1")
    from tqdm import tqdm

    with tqdm(total=args.models, unit="model", desc="generating", disable=None) as bar:
        summary = write_corpus(args.out, args.models, args.seed, progress=lambda done: bar.update(done - bar.n))
    print(json.dumps({"out": str(args.out), **summary.to_json()}))
    return 0


def _bench_build(args) -> int:
    from cad_pipeline.cad.bench import build_throughput

    files = sorted(path for path in args.corpus.rglob("*.json") if MODEL_FILE.match(path.name))
    if not files:
        raise UsageError(f"no model files (<8-digit id>.json) under {args.corpus}")
    result = build_throughput(files, args.seconds, args.workers)
    print(f"corpus: {args.corpus} ({len(files)} models, {result['invalid']} rejected)")
    print(f"parse+build, one core: {result['one_core_best']:.1f} models/s (best of 5 rounds; median {result['one_core_median']:.1f})")
    per_core = result["all_cores_median"] / result["workers"]
    print(f"parse+build, {result['workers']} processes: {result['all_cores_median']:.1f} models/s ({per_core:.1f} per core, median rounds)")
    return 0


def _materialize(args) -> int:
    import dagster as dg

    from cad_pipeline.definitions import load_definitions

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(os.environ.get("CAD_PIPELINE_DATA", "data")).resolve() / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    job = load_definitions().resolve_implicit_global_asset_job_def()
    known = sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys)
    names = known if args.select == "*" else [name.strip() for name in args.select.split(",") if name.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UsageError(f"unknown assets {', '.join(unknown)}; known assets: {', '.join(known)}")
    scales = job.partitions_def.get_partition_keys() if job.partitions_def else []
    if args.scale not in scales:
        raise UsageError(f"unknown scale {args.scale!r}; configured scales: {', '.join(scales)} (set CAD_PIPELINE_SCALES to change them)")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=args.scale,
            asset_selection=[dg.AssetKey(name) for name in names],
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
    _print_run_summary(result, time.perf_counter() - started, home)
    return 0 if result.success else 1


def _print_run_summary(result, seconds: float, home: Path) -> None:
    """What was made and where to look: one line per asset, then its checks."""
    print(f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s (Dagster instance: {home})")
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        numbers = {k: v.value for k, v in materialization.metadata.items() if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}
        paths = [v.value for v in materialization.metadata.values() if type(v).__name__ == "PathMetadataValue"]
        partition = f"[{materialization.partition}]" if materialization.partition else ""
        print(f"  {materialization.asset_key.to_user_string()}{partition}: " + ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in numbers.items()))
        for path in paths:
            print(f"      -> {path}")
    for evaluation in result.get_asset_check_evaluations():
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {'passed' if evaluation.passed else 'FAILED'}")
    for event in result.all_events:
        if event.is_step_failure:
            print(f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip() if event.step_failure_data.error else ''}")


if __name__ == "__main__":
    sys.exit(main())
