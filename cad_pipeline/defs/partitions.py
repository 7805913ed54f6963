import dagster as dg

from cad_pipeline.dataset.scales import configured_scales

scale_partitions = dg.StaticPartitionsDefinition(configured_scales())
