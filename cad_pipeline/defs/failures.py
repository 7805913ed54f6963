"""Empty is a failure, and so is a failure rate above the configured share: an asset never ships an empty result, and
a blocking check stops the data that many models dropped out of."""

import dagster as dg

DEFAULT_MAX_FAILED_SHARE = 0.05


def require_output(produced: int, what: str, reasons: dict[str, int]) -> None:
    """dg.Failure naming why, when a step produced nothing."""
    if produced == 0:
        why = ", ".join(f"{reason}: {count}" for reason, count in reasons.items()) or "no input"
        raise dg.Failure(f"no {what} was produced ({why}); nothing is written")


def failed_share_check(asset: str, failed: dict[str, int], total: int, max_share: float) -> dg.AssetCheckResult:
    share = sum(failed.values()) / total if total else 0.0
    return dg.AssetCheckResult(
        check_name="failed_share",
        asset_key=asset,
        passed=share <= max_share,
        description=f"{share:.1%} of {total:,} models failed (allowed: {max_share:.1%})",
        metadata={"failed_share": share, "max_failed_share": max_share, "failed_by_reason": dg.MetadataValue.json(failed)},
    )


def failed_share_spec(asset: str, what: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "failed_share",
        asset=asset,
        blocking=True,
        description=f"At most `max_failed_share` (default {DEFAULT_MAX_FAILED_SHARE:.0%}) of the models failed {what}.",
    )


def store_repairs(context: dg.AssetExecutionContext, kind: str, repaired: list[str]) -> dict:
    """Metadata counting the damaged store entries of `kind` that this step rebuilt, each logged with its path."""
    for damage in repaired[:20]:
        context.log.warning(f"store {kind} entry rebuilt: {damage}")
    if len(repaired) > 20:
        context.log.warning(f"... and {len(repaired) - 20:,} more damaged {kind} entries rebuilt")
    return {"store_repaired": dg.MetadataValue.json({kind: len(repaired)})}
