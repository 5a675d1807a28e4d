"""Daily dataset scoring with the serving champion, through the same core as the gRPC scorer."""


import dagster as dg
import pandas as pd

from ds_assets.analytics import markdown_table
from ds_assets.assets.partitions import daily_partitions
from ds_assets.datasets import score_frame
from ds_assets.resources.registry import ModelRegistry
from ds_serving.scoring import Scorer


class ScoringConfig(dg.Config):
    chunk_rows: int = 65_536


@dg.asset(
    partitions_def=daily_partitions,
    deps=["champion"],
    kinds={"onnx", "parquet"},
    code_version="1",
    group_name="scoring",
)
def scored_telemetry(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    registry: ModelRegistry,
    raw_telemetry: pd.DataFrame,
) -> pd.DataFrame:
    """Score, flag and top contributing feature for every row of the day."""
    bundle = registry.champion()
    scored = score_frame(Scorer.from_bundle(bundle), raw_telemetry, config.chunk_rows)
    flagged = scored.loc[scored["is_anomaly"]]
    top_hosts = flagged["host_id"].value_counts().head(5).rename_axis("host_id")
    context.add_output_metadata(
        {
            "model_version": bundle.manifest.version,
            "rows": len(scored),
            "flagged_rows": len(flagged),
            "flag_rate": round(len(flagged) / max(len(scored), 1), 6),
            "top_flagged_hosts": dg.MetadataValue.md(
                markdown_table(top_hosts.reset_index(name="flagged_rows"))
            ),
        }
    )
    return scored
