import functools

import dagster as dg

from cad_pipeline.dataset.scales import configured_scales
from cad_pipeline.partition import PartitionBusy, PartitionFolder

scale_partitions = dg.StaticPartitionsDefinition(configured_scales())


def writes_partition(asset_function):
    """The asset holds its partition's lock for its whole step (see `PartitionFolder.writing`): a second
    materialization of the same asset and scale fails at once, naming the run that holds it."""

    @functools.wraps(asset_function)
    def locked(context: dg.AssetExecutionContext, **resources_and_config):
        partition = PartitionFolder(resources_and_config["settings"].partition_dir(context.partition_key))
        try:
            with partition.writing(asset_function.__name__):
                return asset_function(context, **resources_and_config)
        except PartitionBusy as error:
            raise dg.Failure(description=str(error)) from None

    return locked
