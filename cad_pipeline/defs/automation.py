"""Automation: re-observe the corpus when its files change, and a nightly pass that brings every scale up to date."""

from collections.abc import Iterable, Mapping
from graphlib import TopologicalSorter

import dagster as dg

from cad_pipeline.dataset.corpus import CorpusError, corpus_fingerprint
from cad_pipeline.defs.data import deepcad_corpus
from cad_pipeline.defs.partitions import scale_partitions
from cad_pipeline.defs.resources import PipelineSettings

DATA_VERSION_TAG = "dagster/data_version"
"""Where a materialization records the data version its asset returned."""
PARTITION_TAG = "dagster/partition"
PRIORITY_TAG = "dagster/priority"
NIGHTLY_TAG = "cad_pipeline/nightly"
"""Marks the nightly runs, which the instance's run queue lets through one at a time."""
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    target=deepcad_corpus,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every 5 minutes, fingerprints the corpus folder (paths, sizes and mtimes of its files) and re-materializes "
        "deepcad_corpus when the fingerprint differs from the data version of its latest materialization. It never "
        "makes the first materialization: which corpus to use is the user's choice."
    ),
)
def corpus_changes(context: dg.SensorEvaluationContext, settings: PipelineSettings) -> dg.RunRequest | dg.SkipReason:
    records = context.instance.fetch_materializations(deepcad_corpus.key, limit=1).records
    if not records:
        return dg.SkipReason(
            "deepcad_corpus has never been materialized; materialize it once to take in the corpus, and from then on "
            "this sensor re-materializes it whenever the corpus files change."
        )
    try:
        fingerprint = corpus_fingerprint(settings.corpus_path)
    except CorpusError as error:
        return dg.SkipReason(str(error))
    context.update_cursor(fingerprint.digest)
    latest = records[0]
    recorded = latest.asset_materialization.tags.get(DATA_VERSION_TAG)
    if recorded == fingerprint.digest:
        return dg.SkipReason(
            f"corpus unchanged since its latest materialization: {fingerprint.files:,} files, fingerprint {fingerprint.digest}"
        )
    context.log.info(f"corpus fingerprint {fingerprint.digest} differs from the materialized {recorded}")
    return dg.RunRequest(run_key=f"{fingerprint.digest}-after-{latest.storage_id}")


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "At 02:00 UTC, for every scale (smallest first), requests one run of the assets of that scale that were never "
        "materialized or are older than their parent, and of everything downstream of them. Scales with a queued or "
        f"running run are left alone. Runs are tagged {NIGHTLY_TAG}, which the instance lets through one at a time, "
        "smallest scale first, so each scale reuses the renders of the smaller ones; the gpu pool keeps training and "
        "evaluation steps from overlapping with any other run."
    ),
)
def nightly_scales(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per out-of-date scale; an unpartitioned asset (the corpus) goes only into the first of them.

    Later runs wait behind that first one, and materializing the corpus again in each would make every
    smaller scale look older than the corpus on the next night.
    """
    instance = context.instance
    graph = context.repository_def.asset_graph
    keys = graph.materializable_asset_keys
    parents = {key.to_user_string(): [parent.to_user_string() for parent in graph.get(key).parent_keys] for key in keys}
    partitioned = [key for key in keys if graph.get(key).is_partitioned]
    unpartitioned = {key.to_user_string(): _latest_storage_id(instance, key) for key in keys if not graph.get(key).is_partitioned}
    night = context.scheduled_execution_time.date().isoformat()
    requests, busy, requested = [], [], set()
    for index, scale in enumerate(scale_partitions.get_partition_keys()):
        if _has_active_run(instance, scale):
            busy.append(scale)
            continue
        latest = {**unpartitioned, **{key.to_user_string(): _latest_storage_id(instance, key, scale) for key in partitioned}}
        selection = [name for name in keys_to_materialize(parents, latest) if name not in requested]
        if not selection:
            continue
        requested.update(unpartitioned.keys() & set(selection))
        context.log.info(f"{scale}: {', '.join(selection)}")
        requests.append(
            dg.RunRequest(
                run_key=f"nightly-{scale}-{night}",
                partition_key=scale,
                asset_selection=[dg.AssetKey.from_user_string(name) for name in selection],
                tags={NIGHTLY_TAG: "true", PRIORITY_TAG: str(-index)},
            )
        )
    if requests:
        return requests
    if busy:
        verb = "has" if len(busy) == 1 else "have"
        return dg.SkipReason(f"{', '.join(busy)} already {verb} a run in progress; every other scale is up to date")
    return dg.SkipReason("every scale is up to date")


def keys_to_materialize(parents: Mapping[str, Iterable[str]], latest: Mapping[str, int | None]) -> list[str]:
    """Assets to materialize, parents first: those never materialized or older than a parent, and all downstream of them.

    `parents` maps every asset to its parents; `latest` maps every asset to the storage id of its latest
    materialization (None: never), larger being newer.
    """
    sorter = TopologicalSorter(parents)
    sorter.prepare()
    stale = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        for key in ready:
            own = latest[key]
            if own is None or any(parent in stale or latest[parent] > own for parent in parents[key]):
                stale.append(key)
        sorter.done(*ready)
    return stale


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> int | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].storage_id if records else None


def _has_active_run(instance: dg.DagsterInstance, scale: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={PARTITION_TAG: scale}), limit=1))
