"""`cad-pipeline`: the pipeline's operations headless."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path

EXIT_VALID, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2  # argparse exits with 2 on usage errors too
MODEL_FILE = re.compile(r"^\d{8}(_\d+)?\.json$")


def main(argv: list[str] | None = None) -> int:
    from cad_pipeline.evaluate.config import EvaluationConfig
    from cad_pipeline.options import SettingError, check_values, options_of
    from cad_pipeline.train.config import TrainConfig

    try:
        parser = _parser()
        args = parser.parse_args(argv)
        for settings_class in (TrainConfig, EvaluationConfig):  # before any work, whatever the command reads first
            check_values(settings_class, {name: getattr(args, name) for name, *_ in options_of(settings_class) if getattr(args, name, None) is not None})
        return args.handler(args)
    except (UsageError, SettingError) as error:
        print(f"cad-pipeline: error: {error}", file=sys.stderr)
        return EXIT_USAGE


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Refuses a bad command line with one line (argparse's default adds the whole usage first); exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return values


def _at_least(kind: type, minimum: float, maximum: float | None = None):
    """A flag type that refuses numbers outside [minimum, maximum] (and NaN) with the allowed range."""
    from cad_pipeline.options import Allowed

    allowed = Allowed(minimum, maximum)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{text}: {problem}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    from cad_pipeline.evaluate.config import EvaluationConfig

    parser = _Parser(prog="cad-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="read and build one DeepCAD JSON file and report what it is")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_inspect)

    code = commands.add_parser("code", help="print the OpenECAD v2 code of one DeepCAD JSON file")
    code.add_argument("file", type=Path)
    code.set_defaults(handler=_code)

    exec_code = commands.add_parser(
        "exec-code", help="build OpenECAD v2 code through the safe interpreter (nothing in it is executed) and report as inspect does"
    )
    exec_code.add_argument("file", type=Path)
    exec_code.add_argument("--json", action="store_true", help="print one JSON object")
    exec_code.set_defaults(handler=_exec_code)

    score = commands.add_parser("score", help="score OpenECAD code against a ground-truth DeepCAD JSON file (every metric)")
    score.add_argument("--truth", type=Path, required=True, help="the ground-truth DeepCAD JSON file")
    score.add_argument("--code", type=Path, required=True, help="OpenECAD code, or a model's answer holding a python block")
    score.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    score.set_defaults(handler=_score)

    sample = commands.add_parser("sample", help="write a generated sample corpus in DeepCAD's layout")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--models", type=_at_least(int, 1), default=1300)
    sample.add_argument("--seed", type=_at_least(int, 0), default=0)
    sample.set_defaults(handler=_sample)

    render = commands.add_parser("render", help="draw one DeepCAD JSON file or every model under a folder")
    render.add_argument("path", type=Path)
    render.add_argument("--out", type=Path, required=True, help="folder for <id>_<view>.png (its .store keeps every image by content)")
    render.add_argument("--views", default="front,top,right", help="comma-separated: front,back,top,bottom,left,right,iso")
    render.add_argument("--size", type=int, default=512, help="pixels per side (32-4096)")
    render.add_argument("--style", choices=["lines", "shaded"], default="lines")
    render.add_argument("--layout", choices=["per_view", "grid"], default="per_view", help="grid: iso, front, top, right in one 2x2 image")
    render.add_argument("--workers", type=_at_least(int, 0, 4096), default=0, help="processes (0: every core)")
    render.add_argument("--timeout", type=_at_least(float, 0.001), default=60.0, help="seconds after which one model is given up")
    render.set_defaults(handler=_render)

    bench = commands.add_parser("bench", help="throughput benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    for name, help_text in (
        ("build", "parse+build models per second"),
        ("render", "parse+build+3 views+PNG models per minute"),
        ("conversations", "code writing + token count + conversation records, samples per minute (3 views per model)"),
    ):
        command = benches.add_parser(name, help=help_text)
        command.add_argument("--corpus", type=Path, required=True, help="a DeepCAD corpus or a folder of <id>.json files")
        command.add_argument("--seconds", type=_at_least(float, 0.001), default=10.0, help="time per measurement, split into 5 rounds")
        command.add_argument("--workers", type=_at_least(int, 0, 4096), default=0, help="processes for the all-cores figure (0: every core)")
        command.set_defaults(handler=_bench)

    bench_train = benches.add_parser("train", help="our training loop against a plain transformers Trainer, real tokens/s")
    _add_partition_argument(bench_train)
    bench_train.add_argument("--samples", type=_at_least(int, 1), default=96, help="training samples both loops draw from")
    bench_train.add_argument("--steps", type=_at_least(int, 1), default=12, help="timed optimizer steps per loop")
    bench_train.add_argument("--warmup", type=_at_least(int, 0), default=2, help="untimed steps first")
    bench_train.add_argument("--batch-size", type=_at_least(int, 1), default=4)
    bench_train.add_argument("--threads", type=_at_least(int, 0, 4096), default=0, help="CPU threads torch uses (0: torch's default)")
    bench_train.add_argument("--base-model", default="tiny", help="'tiny', a local model folder or 'preset:NAME' (random weights)")
    bench_train.add_argument("--packing", choices=("auto", "on", "off"), default="off", help="our loop's packing (the Trainer never packs)")
    bench_train.add_argument("--compile", action="store_true", help="compile our loop's layers with torch.compile (the warm-up steps take the compile time)")
    bench_train.add_argument("--peak-tflops", type=_at_least(float, 0.0), default=0.0, help="the device's peak for MFU where the built-in table has none (CPUs, fp32)")
    bench_train.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    bench_train.set_defaults(handler=_bench_train)

    bench_plan = benches.add_parser("plan", help="a training plan's projected epoch time against the epoch's measured time")
    _add_partition_argument(bench_plan)
    bench_plan.add_argument("--samples", type=_at_least(int, 1), default=48, help="training samples in the epoch")
    bench_plan.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    _add_plan_options(bench_plan)
    _add_train_options(bench_plan)
    bench_plan.set_defaults(handler=_bench_plan)

    bench_memory = benches.add_parser("memory", help="the memory planner's peaks against measured steps, over batch sizes, lengths and checkpointing")
    _add_partition_argument(bench_memory)
    bench_memory.add_argument("--batch-sizes", type=_positive_ints, default=(), help="micro-batch sizes checked, comma-separated (default: 1,2,4,8)")
    bench_memory.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    _add_train_options(bench_memory)
    bench_memory.set_defaults(handler=_bench_memory)

    bench_learn = benches.add_parser(
        "learn", help="train for a wall-clock budget, then evaluate on validation pictures: what the model learns in that time"
    )
    _add_partition_argument(bench_learn)
    bench_learn.add_argument("--minutes", type=_at_least(float, 0.01), required=True, help="training budget; generation gets as much again at most")
    bench_learn.add_argument("--samples", type=_at_least(int, 1), default=100, help="validation models evaluated, on their first view (default: 100)")
    bench_learn.add_argument("--max-new-tokens", type=_at_least(int, 1), default=EvaluationConfig.max_new_tokens, help="tokens generated per answer at most (default: %(default)s)")
    bench_learn.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    _add_train_options(
        bench_learn,
        chosen_by_command={
            "epochs": "enough for the time budget to end training",
            "keep_best": "on",
            "validation_every": "a tenth of an epoch's steps, so a budget of about one epoch gives about 10 validation points",
            "validation_samples": "60: the first views of 60 models",
        },
        left_out=("max_minutes",),
    )
    bench_learn.set_defaults(handler=_bench_learn)

    train = commands.add_parser("train", help="fine-tune the base model (LoRA or full) on a partition's conversations, tracked in MLflow")
    _add_partition_argument(train)
    _add_train_options(train)
    train.set_defaults(handler=_train)

    estimate = commands.add_parser("estimate", help="measure training steps and project time and memory for every scale")
    _add_partition_argument(estimate)
    _add_plan_options(estimate)
    _add_train_options(estimate)
    estimate.set_defaults(handler=_estimate)

    evaluate = commands.add_parser(
        "evaluate", help="generate code for a partition's validation pictures with a trained model (and its base model) and score it"
    )
    evaluate.add_argument("--adapter", type=Path, required=True, help="a trained model's folder, LoRA or full (<partition>/lora_adapter/adapter)")
    _add_partition_argument(evaluate)
    evaluate.add_argument(
        "--out", type=Path, help="folder for answers.jsonl, samples.parquet, aggregates.json and gallery.png (default: <partition>/evaluation)"
    )
    _add_evaluation_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    materialize = commands.add_parser("materialize", help="materialize assets for one scale without the UI")
    materialize.add_argument("--scale", required=True)
    materialize.add_argument("--select", default="*", help="comma-separated asset names (default: every asset)")
    _add_plan_options(materialize)
    _add_train_options(materialize)
    _add_evaluation_options(materialize)
    materialize.set_defaults(handler=_materialize)
    return parser


def _add_partition_argument(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--scale", help="a materialized scale under $CAD_PIPELINE_DATA/partitions")
    where.add_argument("--partition", type=Path, help="a folder with train.json, val.json and images/")


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan-steps", type=_at_least(int, 1), default=20, help="training steps the plan times")
    parser.add_argument("--plan-warmup", type=_at_least(int, 0), default=3, help="untimed steps before them")


def _add_train_options(parser: argparse.ArgumentParser, chosen_by_command: dict[str, str] | None = None, left_out: tuple[str, ...] = ()) -> None:
    from cad_pipeline.train.config import TrainConfig

    _add_options(parser, TrainConfig, "training settings", chosen_by_command, left_out)


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    from cad_pipeline.evaluate.config import EvaluationConfig

    _add_options(parser, EvaluationConfig, "evaluation settings")


def _add_options(
    parser: argparse.ArgumentParser, settings_class, title: str, chosen_by_command: dict[str, str] | None = None, left_out: tuple[str, ...] = ()
) -> None:
    """A flag per setting. Those in `chosen_by_command` default to None, so the command can tell that the user set none
    and choose the value it describes; those `left_out` are set by the command's own flags."""
    from cad_pipeline.options import options_of

    chosen = chosen_by_command or {}
    group = parser.add_argument_group(title)
    for name, kind, default, help_text in options_of(settings_class):
        if name in left_out:
            continue
        flag = "--" + name.replace("_", "-")
        if name in chosen:
            default, help_text = None, f"{help_text} (default: {chosen[name]})"
        elif kind is not bool:
            help_text = f"{help_text} (default: {default})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=default, help=help_text)


def _train_config(args):
    from cad_pipeline.options import from_values
    from cad_pipeline.train.config import TrainConfig

    return from_values(TrainConfig, args)


def _evaluation_config(args):
    from cad_pipeline.evaluate.config import EvaluationConfig
    from cad_pipeline.options import from_values

    return from_values(EvaluationConfig, args)


def _instance(home: Path):
    """The Dagster instance at `home`, created under a lock: two first runs on a fresh home would both create and
    migrate its sqlite storage, and leave it broken (two alembic heads)."""
    import fcntl

    import dagster as dg

    with open(home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # the run storage exists and is migrated before the lock goes
    return instance


def _partition_dir(args) -> Path:
    from cad_pipeline.defs.resources import settings_from_environment
    from cad_pipeline.partition import TRAIN_JSON

    folder = args.partition if args.partition else settings_from_environment().partition_dir(args.scale)
    if not (folder / TRAIN_JSON).is_file():
        raise UsageError(f"{folder} has no train.json: materialize `conversations` for that scale first (make run does 1k)")
    return folder


def _train(args) -> int:
    from cad_pipeline.defs.resources import MlflowSettings, settings_from_environment
    from cad_pipeline.train.run import run_training

    folder = _partition_dir(args)
    settings = settings_from_environment()
    tracking = MlflowSettings().tracking(settings)
    run = run_training(_train_config(args), folder, folder / "lora_adapter", tracking, f"train {folder.name}", {"partition": folder.name, "source": "cli"})
    before, after = run.validation_before_and_after
    print(f"{len(run.state.steps)} steps in {run.seconds:.1f} s ({run.seconds_per_step:.2f} s/step), validation loss {before:.4f} -> {after:.4f}")
    print(f"trained: {run.params['trained_parts']}")
    if run.config.auto_batch_size:
        measured = max(record.peak_memory_bytes for record in run.state.steps) / 2**30
        print(
            f"auto batch size: {run.config.batch_size} per micro-batch x {run.config.gradient_accumulation} accumulated, planned peak "
            f"{run.params['auto_batch_planned_peak_bytes'] / 2**30:.2f} GiB within {run.params['auto_batch_budget_bytes'] / 2**30:.2f} GiB; measured peak {measured:.2f} GiB"
        )
    saved = run.saved_validation
    print(f"saved ({run.params['train_mode_resolved']}, weights of step {saved.step}, epoch {saved.epoch:.3g}): {run.adapter}")
    print(f"MLflow run: {run.run_url} (start the UI with: {_mlflow_ui_command(tracking)})")
    return 0


def _mlflow_ui_command(tracking) -> str:
    return f"mlflow ui --backend-store-uri {tracking.tracking_uri} --port 5000"


def _estimate(args) -> int:
    from cad_pipeline.defs.resources import settings_from_environment
    from cad_pipeline.train.plan import plan_partition
    from cad_pipeline.train.presets import described

    folder = _partition_dir(args)
    corpus = settings_from_environment().corpus_path
    config = _train_config(args)
    plan = plan_partition(config, folder, corpus, args.scale or folder.name, args.plan_steps, args.plan_warmup)
    projections, memory = plan.markdown()
    print(f"base model: {described(config.base_model)}, measured on {plan.measurement.device}")
    print(f"max_length {plan.max_length} tokens: {plan.samples_left_out} train and validation samples are longer and left out")
    print(projections)
    print()
    print(memory)
    return 0


def _evaluate(args) -> int:
    from cad_pipeline.defs.resources import MlflowSettings, settings_from_environment
    from cad_pipeline.evaluate.evaluation import EVALUATION_FOLDER, SAMPLES_FILE, evaluate_adapter
    from cad_pipeline.parallel import process_pool
    from cad_pipeline.train.model import TRAIN_CONFIG_FILE

    folder = _partition_dir(args)
    if not (args.adapter / TRAIN_CONFIG_FILE).is_file():
        raise UsageError(f"{args.adapter} is not a trained model's folder (no {TRAIN_CONFIG_FILE}); train one with `cad-pipeline train`")
    settings = settings_from_environment()
    tracking = MlflowSettings().tracking(settings)
    out = args.out or folder / EVALUATION_FOLDER
    with process_pool() as pool:
        result = evaluate_adapter(
            args.adapter, folder, settings.corpus_path, _evaluation_config(args), pool, tracking,
            f"evaluate {folder.name}", {"partition": folder.name, "source": "cli"}, out,
        )  # fmt: skip
    print(result.markdown())
    print()
    print("validation loss: " + ", ".join(f"{variant} {loss:.4f}" for variant, loss in result.validation_loss.items()))
    stops = (f"{variant} " + ", ".join(f"{reason} {count}" for reason, count in counts.items()) for variant, counts in result.stop_reasons.items())
    print("stop reasons: " + "; ".join(stops))
    cut = [f"{variant} {len(ids)}: {', '.join(ids)}" for variant, ids in result.cut_samples.items() if ids]
    print("cut (the overall generation budget ran out; a rerun generates them): " + "; ".join(cut) if cut else "cut: none")
    print(f"per-sample table: {out / SAMPLES_FILE}")
    print(f"gallery ({', '.join(f'{rank} {sample_id}' for rank, sample_id in result.gallery)}): {result.gallery_path}")
    print(f"MLflow run: {result.run_url} (start the UI with: {_mlflow_ui_command(tracking)})")
    return 0


def _inspect(args) -> int:
    from cad_pipeline.cad.inspect import inspect_file

    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
    return _report(inspect_file(args.file), args.json)


def _exec_code(args) -> int:
    from cad_pipeline.cad.inspect import inspect_code

    return _report(inspect_code(_read_code(args.file), args.file.stem), args.json)


def _read_code(path: Path) -> str:
    """A code file's text, refused unread past the interpreter's size limit."""
    from cad_pipeline.cad.openecad.program import MAX_SOURCE_CHARS
    from cad_pipeline.files import FileTooLarge, read_bounded

    try:
        return read_bounded(path, MAX_SOURCE_CHARS, "OpenECAD code").decode("utf-8", errors="replace")
    except FileTooLarge as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def _report(report, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_json()))
    elif report.valid:
        print(f"{report.id}: valid, {report.n_extrudes} extrudes, {report.n_curves} curves")
        print(f"  volume {report.volume:.6g} m^3, area {report.area:.6g} m^2")
        print(f"  bbox {tuple(round(v, 9) for v in report.bbox_min)} .. {tuple(round(v, 9) for v in report.bbox_max)} m")
    else:
        print(f"{report.id}: rejected: {report.reason}")
    return EXIT_VALID if report.valid else EXIT_REJECTED


def _score(args) -> int:
    from cad_pipeline.cad.build import build_solid
    from cad_pipeline.cad.deepcad_json import read_file
    from cad_pipeline.cad.errors import ModelError
    from cad_pipeline.cad.openecad.writer import write_code
    from cad_pipeline.evaluate.code_scores import extract_code
    from cad_pipeline.evaluate.score import PROTOCOLS, score_code

    for path in (args.truth, args.code):
        if not path.exists():
            raise UsageError(f"{path} does not exist")
    try:
        truth = read_file(args.truth)
        truth_solid = build_solid(truth)
    except ModelError as error:
        raise UsageError(f"the ground truth {args.truth} is not a valid model: {error}") from None
    text = _read_code(args.code)
    code = extract_code(text) if "```python" in text else text
    result = score_code(args.truth.stem, truth, truth_solid, write_code(truth), code)
    if args.json:
        print(json.dumps({**result.to_json(), "protocols": PROTOCOLS}, indent=1))
    else:
        for key, value in result.to_json().items():
            print(f"{key}: {value}" + (f"  ({PROTOCOLS[key]})" if key in PROTOCOLS and value is not None else ""))
    return 0


def _code(args) -> int:
    from cad_pipeline.cad.deepcad_json import read_file
    from cad_pipeline.cad.errors import ModelError
    from cad_pipeline.cad.openecad.writer import write_code

    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
    try:
        sequence = read_file(args.file)
    except ModelError as error:
        print(f"{args.file.stem}: rejected: {error.message}", file=sys.stderr)
        return EXIT_REJECTED
    sys.stdout.write(write_code(sequence))
    return EXIT_VALID


def _sample(args) -> int:
    from cad_pipeline.cad.sample_corpus import write_corpus

    if args.models < 1:
        raise UsageError("--models must be at least 1")
    from tqdm import tqdm

    with tqdm(total=args.models, unit="model", desc="generating", disable=None) as bar:
        summary = write_corpus(args.out, args.models, args.seed, progress=lambda done: bar.update(done - bar.n))
    print(json.dumps({"out": str(args.out), **summary.to_json()}))
    return 0


def _render(args) -> int:
    from cad_pipeline.parallel import process_pool
    from cad_pipeline.render.batch import RenderSettings, link_images, render_models
    from cad_pipeline.render.views import parse_views

    files = _model_files(args.path)
    try:
        views = tuple(view.name for view in parse_views(args.views))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.size < 16:
        raise UsageError("--size must be at least 16 pixels")
    settings = RenderSettings(views=views, size=args.size, layout=args.layout, style=args.style)
    with process_pool(min(args.workers or len(files), len(files))) as pool:
        result = render_models({path.stem: path for path in files}, settings, args.out / ".store", pool, timeout=args.timeout)
    link_images(((o.id, view, image) for o in result.outcomes for view, image in o.images.items()), args.out)
    failures = [{"id": o.id, "reason_code": o.reason_code, "reason": o.reason} for o in result.outcomes if o.status == "failed"]
    summary = {
        "out": str(args.out),
        "models": len(result.outcomes),
        "rendered": result.count("rendered"),
        "reused": result.count("reused"),
        "failed": result.count("failed"),
        "failed_by_reason": result.failed_by_reason,
        "failures": failures[:20],
        "seconds": round(result.seconds, 3),
    }
    print(json.dumps(summary))
    return 0 if not failures else EXIT_REJECTED


def _bench(args) -> int:
    from cad_pipeline import bench

    files = _model_files(args.corpus)
    if args.bench == "conversations":
        result = bench.conversation_rate(files, args.seconds)
        print(f"corpus: {args.corpus} ({result['models']} models, {result['rejected']} rejected)")
        print(
            f"code writing + token count + {bench.VIEWS_PER_MODEL} conversation records per model, one core: "
            f"{result['best']:,.0f} samples/min (best of 5 rounds; median {result['median']:,.0f})"
        )
        return 0
    work, unit, factor = (bench.build_one, "models/s", 1.0) if args.bench == "build" else (bench.render_one, "models/min", 60.0)
    what = "parse+build" if args.bench == "build" else "parse+build+3 views at 512 px+PNG"
    result = bench.throughput(work, files, args.seconds, args.workers)
    print(f"corpus: {args.corpus} ({len(files)} models, {result['rejected']} rejected)")
    best, median = result["one_core_best"] * factor, result["one_core_median"] * factor
    print(f"{what}, one core: {best:.1f} {unit} (best of 5 rounds; median {median:.1f})")
    total, workers = result["all_cores_median"] * factor, result["workers"]
    print(f"{what}, {workers} processes: {total:.1f} {unit} ({total / workers:.1f} per core, median rounds)")
    return 0


def _bench_train(args) -> int:
    import tempfile

    from cad_pipeline.train.benchmark import compare_with_trainer
    from cad_pipeline.train.flops import FORMULA, peak_flops
    from cad_pipeline.train.presets import described

    folder = _partition_dir(args)
    with tempfile.TemporaryDirectory() as work:
        compared = compare_with_trainer(
            folder, Path(work), args.samples, args.steps, args.warmup, args.batch_size, args.threads, args.base_model, args.packing, args.compile
        )  # fmt: skip
    peak = peak_flops(compared.device, compared.dtype, args.peak_tflops)
    ours, trainer = compared.speeds["ours"], compared.speeds["trainer"]
    if args.json:
        figures = {
            "partition": str(folder), "base_model": described(args.base_model), "samples": args.samples, "batch_size": args.batch_size,
            "steps": args.steps, "warmup": args.warmup, "compiled": args.compile, "device": str(compared.device), "dtype": _dtype_name(compared.dtype), "packed": compared.packed,
            "flops_per_real_token": compared.flops_per_real_token, "flop_formula": FORMULA, "peak_flops": peak,
            "trainer": trainer.to_json(peak), "ours": ours.to_json(peak), "ratio": compared.ratio, "planned_peak_bytes": compared.planned_peak_bytes,
        }  # fmt: skip
        print(json.dumps(figures, indent=1))
        return 0
    print(f"partition: {folder} ({args.samples} samples, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}), base model {described(args.base_model)}")
    print(f"device {compared.device}, {_dtype_name(compared.dtype)}; {_peak_text(peak)}")
    print(
        f"transformers Trainer (random batches, pad to longest, full logits): {trainer.real_tokens_per_second:,.0f} real tokens/s, "
        f"pad {trainer.pad_fraction:.1%}, collating on the training thread {trainer.data_wait_share:.1%} of the step time, {_flops_text(trainer, peak)}"
    )
    print(
        f"our loop (length-grouped {'packed' if compared.packed else 'padded'} batches, answer-only logits, batches made ahead"
        f"{', compiled layers' if args.compile else ''}): "
        f"{ours.real_tokens_per_second:,.0f} real tokens/s, pad {ours.pad_fraction:.1%}, waiting for data {ours.data_wait_share:.1%} "
        f"of the step time, {_flops_text(ours, peak)}"
    )
    print("both timed from the end of the step before, batch making included")
    print(f"model FLOPs: {compared.flops_per_real_token / 1e9:.3f} GFLOP per real token over the drawn samples; {FORMULA}")
    print(f"ratio: {compared.ratio:.2f}x")
    print(
        f"peak memory: Trainer {trainer.peak_memory_bytes / 2**30:.2f} GiB; our loop {ours.peak_memory_bytes / 2**30:.2f} GiB, "
        f"planned {compared.planned_peak_bytes / 2**30:.2f} GiB (the calibrated planner, as training_plan gives it)"
    )
    return 0


def _flops_text(speed, peak: float | None) -> str:
    achieved = f"{speed.model_flops_per_second / 1e12:.3f} model TFLOP/s"
    return f"{achieved}, MFU {speed.model_flops_per_second / peak:.1%}" if peak else achieved


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _peak_text(peak: float | None) -> str:
    if peak is None:
        return "peak unknown for this device and dtype, so no MFU (give it with --peak-tflops)"
    return f"peak {peak / 1e12:,.1f} TFLOP/s"


def _bench_plan(args) -> int:
    import tempfile

    from dataclasses import asdict

    from cad_pipeline.train.benchmark import check_projection
    from cad_pipeline.train.presets import described

    folder, config = _partition_dir(args), _train_config(args)
    with tempfile.TemporaryDirectory() as work:
        check = check_projection(folder, Path(work), args.samples, args.plan_steps, args.plan_warmup, config)
    if args.json:
        print(json.dumps({"partition": str(folder), "base_model": described(config.base_model), **asdict(check), "ratio": check.ratio}, indent=1))
        return 0
    print(f"partition: {folder}, {check.samples} samples, {check.steps_per_epoch} steps per epoch, base model {described(config.base_model)}")
    print(f"projected epoch: {check.projected_epoch_seconds:.2f} s (from {args.plan_steps} timed steps after {args.plan_warmup})")
    print(f"measured epoch: {check.measured_epoch_seconds:.2f} s (sum of the optimizer steps' times)")
    print(f"projected / measured: {check.ratio:.4f} (target: within 0.85-1.15)")
    print(f"peak memory: planned {check.predicted_peak_bytes / 2**30:.2f} GiB (the calibrated planner, as training_plan gives it), measured {check.measured_peak_bytes / 2**30:.2f} GiB")
    return 0


def _bench_memory(args) -> int:
    import tempfile

    from dataclasses import asdict

    from cad_pipeline.train.benchmark import MEMORY_CHECK_BATCHES, check_memory
    from cad_pipeline.train.presets import described

    folder, config = _partition_dir(args), _train_config(args)
    with tempfile.TemporaryDirectory() as work:
        factor, slack, checks = check_memory(folder, Path(work), config, args.batch_sizes or MEMORY_CHECK_BATCHES)
    lowest, highest = min(check.ratio for check in checks), max(check.ratio for check in checks)
    if args.json:
        rows = [{**asdict(check), "ratio": check.ratio} for check in checks]
        print(json.dumps({"partition": str(folder), "base_model": described(config.base_model), "calibration": factor, "slack_bytes": slack, "checks": rows, "lowest_ratio": lowest, "highest_ratio": highest}, indent=1))
        return 0
    print(f"partition: {folder}, base model {described(config.base_model)}; planner calibrated as training_plan does: factor {factor:.3f}, slack {slack / 2**20:.0f} MiB")
    print("| batch | padded length | checkpointing | planned GiB | measured GiB | planned / measured |")
    print("|---:|---:|---|---:|---:|---:|")
    for check in checks:
        print(
            f"| {check.batch_size} | {check.padded_length:,} | {'on' if check.gradient_checkpointing else 'off'} | "
            f"{check.predicted_peak_bytes / 2**30:.3f} | {check.measured_peak_bytes / 2**30:.3f} | {check.ratio:.3f} |"
        )
    print(f"planned / measured from {lowest:.3f} to {highest:.3f} (target: from 1.0 to 1.15)")
    return 0


def _bench_learn(args) -> int:
    from cad_pipeline.defs.resources import MlflowSettings, settings_from_environment
    from cad_pipeline.evaluate.learning import learn_benchmark
    from cad_pipeline.options import options_of
    from cad_pipeline.parallel import process_pool
    from cad_pipeline.train.config import TrainConfig

    if args.minutes <= 0:
        raise UsageError("--minutes must be positive: the training budget in minutes")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    folder = _partition_dir(args)
    given = {name: getattr(args, name) for name, *_ in options_of(TrainConfig) if getattr(args, name, None) is not None}
    settings = settings_from_environment()
    tracking = MlflowSettings().tracking(settings)
    with process_pool() as pool:
        result = learn_benchmark(
            folder, settings.corpus_path, given, args.minutes, args.samples, pool, tracking,
            {"partition": folder.name, "source": "cli"}, max_new_tokens=args.max_new_tokens,
            log=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(result.text())
        print(f"(start the MLflow UI with: {_mlflow_ui_command(tracking)})")
    return 0


def _model_files(path: Path) -> list[Path]:
    """One model file, or every <8-digit id>.json under a folder (a DeepCAD corpus or a flat folder)."""
    if path.is_file():
        return [path]
    files = sorted(found for found in path.rglob("*.json") if MODEL_FILE.match(found.name)) if path.is_dir() else []
    if not files:
        raise UsageError(f"no model files (<8-digit id>.json) at {path}")
    return files


def _materialize(args) -> int:
    import uuid

    import dagster as dg

    from cad_pipeline.definitions import load_definitions

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(os.environ.get("CAD_PIPELINE_DATA", "data")).resolve() / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    definitions = load_definitions()
    job = definitions.resolve_implicit_global_asset_job_def()
    known = [key.to_user_string() for key in definitions.resolve_asset_graph().toposorted_asset_keys]  # pipeline order
    selected = known if args.select == "*" else [name.strip() for name in args.select.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(known))
    if unknown:
        raise UsageError(f"unknown assets {', '.join(unknown)}; known assets: {', '.join(known)}")
    names = [name for name in known if name in selected]
    scales = job.partitions_def.get_partition_keys() if job.partitions_def else []
    if args.scale not in scales:
        raise UsageError(f"unknown scale {args.scale!r}; configured scales: {', '.join(scales)} (set CAD_PIPELINE_SCALES to change them)")
    training = _train_config(args).to_json()
    plan = {"measure_steps": args.plan_steps, "warmup_steps": args.plan_warmup}
    op_config = {"training_plan": {**training, **plan}, "lora_adapter": training, "evaluation": _evaluation_config(args).to_json()}
    labels = _step_labels(job, names, args.scale)
    run_id = str(uuid.uuid4())  # chosen here so the listener can be registered before the run's first event
    started = time.perf_counter()
    with _instance(home) as instance, RunProgress(labels, args.scale) as progress:
        instance.add_event_listener(run_id, progress)
        result = job.execute_in_process(
            instance=instance,
            run_id=run_id,
            partition_key=args.scale,
            asset_selection=[dg.AssetKey(name) for name in names],
            run_config={
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},  # RunProgress prints the log lines
                "ops": {name: {"config": config} for name, config in op_config.items() if name in names},
            },
            raise_on_error=False,
        )
    _print_run_summary(result, asset_rows(progress.entries, labels), time.perf_counter() - started, home)
    return 0 if result.success else 1


def _step_labels(job, names: list[str], partition: str) -> dict[str, str]:
    """Each selected asset's step key -> how the summary names it: the asset, with [partition] if it is partitioned."""
    import dagster as dg

    labels = {}
    for name in names:
        key = dg.AssetKey(name)
        step = str(job.asset_layer.get_op_output_handle(key).node_handle)
        labels[step] = f"{name}[{partition}]" if job.asset_layer.get(key).partitions_def else name
    return labels


class RunProgress:
    """Follows a run through its events as the instance stores them: writes each log line (time, step, message)
    above a bar of finished assets that names the running one and its time so far. Off a terminal the bar is
    off, so piped output holds only the lines, with no redraws; the step-end lines carry the count instead."""

    STEP_EVENTS_SHOWN = ("STEP_START", "STEP_SUCCESS")  # DEBUG-level in Dagster, yet what a reader follows

    def __init__(self, labels: dict[str, str], scale: str, out=None, bar: bool | None = None):
        import threading

        from tqdm import tqdm

        self.labels = labels
        self.entries = []
        self.finished = 0
        self._out = out or sys.stderr
        self._running: tuple[str, float] | None = None  # one step at a time: the executor runs in process
        self._bar = tqdm(
            total=len(labels), desc=scale, file=self._out, disable=None if bar is None else not bar,
            bar_format="{desc}: {n_fmt}/{total_fmt} assets |{bar:24}| {elapsed}{postfix}",
        )  # fmt: skip
        self._stopped = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> RunProgress:
        if not self._bar.disable:
            self._ticker.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self._bar.close()

    def __call__(self, entry) -> None:
        import logging

        from tqdm import tqdm

        self.entries.append(entry)
        event = entry.dagster_event
        kind = event.event_type_value if event else None
        if entry.level < logging.INFO and kind not in self.STEP_EVENTS_SHOWN:
            return
        message = entry.user_message
        if kind == "STEP_START" and entry.step_key in self.labels:
            self._running = (self.labels[entry.step_key], entry.timestamp)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in self.labels:
            self._running = None
            self.finished += 1
            message += f" ({self.finished}/{len(self.labels)} assets done)"
        if kind == "STEP_FAILURE":
            message += "\n" + textwrap.indent(_failure_reason(event.step_failure_data, with_stack=True), "    ")
        clock = time.strftime("%H:%M:%S", time.localtime(entry.timestamp))
        tqdm.write(f"{clock} {entry.step_key or 'run'}: {message}", file=self._out)
        self._redraw()

    def _redraw(self) -> None:
        self._bar.n = self.finished
        running = self._running
        if running:
            label, since = running
            self._bar.set_postfix_str(f"{label} running for {self._bar.format_interval(time.time() - since)}")
        else:
            self._bar.set_postfix_str("")

    def _tick(self) -> None:
        while not self._stopped.wait(1.0):
            self._redraw()


def _failure_reason(failure, with_stack: bool = False) -> str:
    """Why a step failed: a dg.Failure's description, else the exception Dagster wrapped (with its stack if asked)."""
    if failure.user_failure_data and failure.user_failure_data.description:
        return failure.user_failure_data.description
    error = failure.error
    while error and error.cause:
        error = error.cause
    if not error:
        return ""
    return error.to_string().strip() if with_stack else error.message.strip()


def asset_rows(entries, labels: dict[str, str]) -> list[tuple]:
    """One row per selected asset (labels: step key -> name): outcome, seconds from its step's start to its end
    event, checks passed/total with the failed ones named. A step that started and did not succeed failed; one
    that never started was skipped, because an upstream step failed or a blocking check did."""
    started, ended, succeeded, checks = {}, {}, set(), {}
    for entry in entries:
        event = entry.dagster_event
        if event is None or entry.step_key not in labels:
            continue
        if event.is_step_start:
            started[entry.step_key] = entry.timestamp
        elif event.is_step_success or event.is_step_failure:
            ended[entry.step_key] = entry.timestamp
            if event.is_step_success:
                succeeded.add(entry.step_key)
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            checks.setdefault(entry.step_key, []).append(event.asset_check_evaluation_data)
    rows = []
    for step, label in labels.items():
        outcome = "materialized" if step in succeeded else "failed" if step in started else "skipped"
        seconds = ended[step] - started[step] if step in started and step in ended else None
        rows.append((label, outcome, seconds, _checks_cell(checks.get(step, []))))
    return rows


def _checks_cell(evaluations) -> str | None:
    if not evaluations:
        return None
    failed = [evaluation.check_name for evaluation in evaluations if not evaluation.passed]
    return f"{len(evaluations) - len(failed)}/{len(evaluations)}" + (f" (failed: {', '.join(failed)})" if failed else "")


def _print_run_summary(result, rows: list[tuple], seconds: float, home: Path) -> None:
    """What was made and where to look: a table of the selected assets, then each materialization's numbers and paths."""
    from tabulate import tabulate

    print(f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s (Dagster instance: {home})\n")
    print(tabulate(rows, headers=("asset", "outcome", "seconds", "checks"), floatfmt=".2f", missingval="-"))
    print()
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        numbers = {k: v.value for k, v in materialization.metadata.items() if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}
        paths = [v.value for v in materialization.metadata.values() if type(v).__name__ in ("PathMetadataValue", "UrlMetadataValue")]
        partition = f"[{materialization.partition}]" if materialization.partition else ""
        print(f"  {materialization.asset_key.to_user_string()}{partition}: " + ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in numbers.items()))
        for path in paths:
            print(f"      -> {path}")
    for event in result.all_events:
        if event.is_step_failure:
            print(f"  step {event.step_key} failed: {_failure_reason(event.step_failure_data)}")


if __name__ == "__main__":
    sys.exit(main())
