"""Data assets: the corpus and the nested per-scale subsets."""

import time

import dagster as dg
import pandas as pd

from cad_pipeline.dataset.corpus import Corpus, CorpusError, open_or_generate
from cad_pipeline.dataset.scales import scale_size, validation_target
from cad_pipeline.dataset.subset import ScaleTooLarge, SubsetResult, select_subset, write_manifest
from cad_pipeline.defs.failures import store_repairs
from cad_pipeline.defs.partitions import scale_partitions, writes_partition
from cad_pipeline.defs.resources import PipelineSettings
from cad_pipeline.partition import MANIFEST

OWNERS = ["team:cad-data"]


@dg.asset(
    group_name="data",
    kinds={"python", "json"},
    owners=OWNERS,
    description=(
        "The DeepCAD-format corpus (cad_json/<bucket>/<id>.json + train_val_test_split.json). When the default "
        "folder is missing, a generated sample corpus big enough for the smallest scale is written there first. "
        "Its data version is a fingerprint of the files' paths, sizes and mtimes, which the corpus_changes sensor "
        "compares with the folder to re-materialize it after the corpus changed."
    ),
)
def deepcad_corpus(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    started = time.perf_counter()
    corpus, generated = _open_corpus(settings)
    facts = corpus.describe()
    fingerprint = facts["fingerprint"]
    context.log.info(
        f"corpus at {corpus.root}: {facts['files_on_disk']:,} files, splits {facts['split_sizes']}, fingerprint {fingerprint.digest}"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint.digest),
        metadata={
            "path": dg.MetadataValue.path(str(corpus.root.resolve())),
            "files_on_disk": facts["files_on_disk"],
            "train": facts["split_sizes"]["train"],
            "validation": facts["split_sizes"]["validation"],
            "test": facts["split_sizes"]["test"],
            "split_ids_without_file": sum(facts["missing_files"].values()),
            "generated_sample_corpus": generated,
            "fingerprint": fingerprint.digest,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


@dg.asset(
    group_name="data",
    kinds={"python", "parquet"},
    owners=OWNERS,
    partitions_def=scale_partitions,
    deps=[deepcad_corpus],
    check_specs=[
        dg.AssetCheckSpec("subset_size", asset="cad_subset", description="N train models and min(N/10, available) validation models, all buildable."),
        dg.AssetCheckSpec("no_split_leak", asset="cad_subset", description="No model is in both train and validation.", blocking=True),
        dg.AssetCheckSpec("nested_in_smaller_scales", asset="cad_subset", description="Every smaller scale on disk is a prefix of this one."),
    ],
    description=(
        "Nested, deterministic subset for one scale: the first N buildable train models of one fixed seeded order "
        "of the split, plus min(N/10, available) validation models. Each model is built with OpenCASCADE once and "
        "its report kept in the content-addressed store, so larger scales and reruns reuse it; unbuildable models "
        "are skipped and listed with their reason in the manifest (parquet)."
    ),
)
@writes_partition
def cad_subset(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.MaterializeResult:
    scale = context.partition_key
    corpus, _ = _open_corpus(settings)
    with settings.open_executor() as executor:
        try:
            result = select_subset(
                corpus, scale_size(scale), settings.subset_seed, executor, store=settings.store_path, progress=_log_every(context, 1000)
            )
        except ScaleTooLarge as error:
            raise dg.Failure(description=f"scale {scale}: {error}") from None
    path = settings.partition_dir(scale) / MANIFEST
    write_manifest(result, path)
    context.log.info(
        f"{scale}: {result.n_train:,} train + {result.n_validation:,} validation models from "
        f"{len(result.manifest):,} examined ({result.n_reused:,} reused from the store) in {result.seconds:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={**_subset_metadata(result, path), **store_repairs(context, "reports", result.repaired)},
        check_results=_subset_checks(pd.read_parquet(path), corpus, settings, scale),
    )


def _log_every(context: dg.AssetExecutionContext, step: int):
    """A progress callback that logs a line every `step` models, so long scales show they are moving."""
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if done % step == 0:
            context.log.info(f"{done:,} models examined")

    return advance


def _open_corpus(settings: PipelineSettings) -> tuple[Corpus, bool]:
    try:
        return open_or_generate(settings.corpus_path, settings.generates_sample_corpus, settings.sample_models, settings.sample_seed)
    except CorpusError as error:
        raise dg.Failure(description=str(error)) from None


def _subset_metadata(result: SubsetResult, path) -> dict:
    manifest = result.manifest
    invalid = manifest.loc[~manifest.valid, ["id", "split", "reason"]].head(20)
    return {
        "manifest": dg.MetadataValue.path(str(path.resolve())),
        "train_models": result.n_train,
        "validation_models": result.n_validation,
        "models_examined": len(manifest),
        "models_built": len(manifest) - result.n_reused,
        "models_reused": result.n_reused,
        "invalid_models": int((~manifest.valid).sum()),
        "invalid_by_reason": dg.MetadataValue.json(result.invalid_by_reason),
        "invalid_examples": dg.MetadataValue.md(invalid.to_markdown(index=False) if len(invalid) else "none"),
        "seconds": round(result.seconds, 2),
        "models_per_second": round(result.models_per_second, 1),
        "median_extrudes": float(manifest.loc[manifest.selected, "n_extrudes"].median()),
        "median_curves": float(manifest.loc[manifest.selected, "n_curves"].median()),
    }


def _subset_checks(manifest: pd.DataFrame, corpus: Corpus, settings: PipelineSettings, scale: str) -> list[dg.AssetCheckResult]:
    """Checks read the manifest back from disk, so they test what later stages will see."""
    selected = manifest[manifest.selected]
    train = selected[selected.split == "train"]
    validation = selected[selected.split == "validation"]
    wanted = scale_size(scale)
    examined_validation = int((manifest.split == "validation").sum())
    validation_exhausted = examined_validation == len(corpus.splits["validation"])
    size_ok = (
        (wanted is None or len(train) == wanted)
        and bool(selected.valid.all())
        and (len(validation) == validation_target(len(train)) or (len(validation) < validation_target(len(train)) and validation_exhausted))
    )
    leak = sorted(set(train.id) & set(validation.id))
    prefix_problems = []
    for smaller in scale_partitions.get_partition_keys():
        smaller_size = scale_size(smaller)
        smaller_path = settings.partition_dir(smaller) / MANIFEST
        if smaller == scale or smaller_size is None or (wanted is not None and smaller_size >= wanted) or not smaller_path.exists():
            continue
        smaller_train = pd.read_parquet(smaller_path).query("selected and split == 'train'").id.tolist()
        if smaller_train != train.id.tolist()[: len(smaller_train)]:
            prefix_problems.append(smaller)
    return [
        dg.AssetCheckResult(
            check_name="subset_size",
            passed=size_ok,
            metadata={"train": len(train), "validation": len(validation), "wanted_train": wanted if wanted is not None else "all"},
        ),
        dg.AssetCheckResult(check_name="no_split_leak", passed=not leak, metadata={"leaked_ids": dg.MetadataValue.json(leak[:50])}),
        dg.AssetCheckResult(
            check_name="nested_in_smaller_scales",
            passed=not prefix_problems,
            metadata={"not_a_prefix": dg.MetadataValue.json(prefix_problems)},
        ),
    ]
