"""Snapshot of the asset graph: any change of keys, deps, partitions, groups or checks is a reviewed diff.

Regenerate after an intended change with `UPDATE_SNAPSHOTS=1 pytest cad_pipeline_tests/test_asset_graph.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from cad_pipeline.definitions import load_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
PROJECT = Path(__file__).resolve().parents[1]


def _graph() -> dict:
    graph = load_definitions().resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def.get_partition_keys() if node.partitions_def else None
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "partitions": partitions,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "checks": sorted(check.name for check in graph.get_check_keys_for_assets({key})),
            "blocking_checks": sorted(check.name for check in graph.get_check_keys_for_assets({key}) if graph.get_check_spec(check).blocking),
            "pools": sorted(node.pools or []),
            "has_description": bool(node.description),
        }
    return assets


def test_asset_graph_matches_snapshot(monkeypatch):
    monkeypatch.delenv("CAD_PIPELINE_SCALES", raising=False)
    graph = _graph()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(graph, indent=2) + "\n")
    assert graph == json.loads(SNAPSHOT.read_text())


def test_definitions_validate_through_the_workspace():
    """What `dagster dev` and the UI load: workspace.yaml -> cad_pipeline.definitions."""
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
