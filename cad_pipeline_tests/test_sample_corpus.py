"""The embedded sample corpus: every model builds, the set is as varied as DeepCAD, files copy the real ones, and it is reproducible."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from cad_pipeline.cad.inspect import ModelReport, inspect_bytes
from cad_pipeline.cad.sample_corpus import dumps_model, generate_model, model_key, split_ids, write_corpus
from cad_pipeline.parallel import process_pool

SEED = 1234
N_MODELS = 1000
AXIS_NORMALS = {(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, -1.0)}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample_corpus")
    summary = write_corpus(out, N_MODELS, SEED)
    assert (summary.n_models, summary.n_train + summary.n_validation + summary.n_test) == (N_MODELS, N_MODELS)
    return out


@pytest.fixture(scope="module")
def raw_models(corpus_dir) -> dict[str, bytes]:
    """File bytes by model id, in id order."""
    paths = sorted((corpus_dir / "cad_json").glob("*/*.json"))
    return {path.stem: path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def models(raw_models) -> dict[str, dict]:
    return {model_id: json.loads(raw) for model_id, raw in raw_models.items()}


@pytest.fixture(scope="module")
def reports(raw_models) -> dict[str, ModelReport]:
    with process_pool() as pool:
        built = pool.map(inspect_bytes, raw_models.values(), raw_models.keys(), chunksize=25)
        return {report.id: report for report in built}


def _extrudes(model: dict) -> list[dict]:
    return [model["entities"][step["entity"]] for step in model["sequence"] if step["type"] == "ExtrudeFeature"]


def _sketches(model: dict) -> list[dict]:
    return [model["entities"][step["entity"]] for step in model["sequence"] if step["type"] == "Sketch"]


def _curves(model: dict):
    """(sketch, curves of one loop) for every loop of every profile."""
    for sketch in _sketches(model):
        for profile in sketch["profiles"].values():
            for loop in profile["loops"]:
                yield sketch, loop["profile_curves"]


def _vector(point: dict) -> tuple[float, float, float]:
    return point["x"], point["y"], point["z"]


def test_corpus_has_every_model_in_deepcad_layout(corpus_dir, raw_models):
    assert list(raw_models) == [f"{index:08d}" for index in range(N_MODELS)]
    assert sorted(path.name for path in (corpus_dir / "cad_json").iterdir()) == ["0000"]
    assert not list(corpus_dir.rglob("*.tmp"))


def test_every_model_builds(reports):
    invalid = {model_id: report.reason for model_id, report in reports.items() if not report.valid}
    assert not invalid
    assert all(report.volume > 0.0 for report in reports.values())


def test_stated_bounding_box_is_the_built_solids(models, reports):
    for model_id, model in models.items():
        box = model["properties"]["bounding_box"]
        assert box["type"] == "BoundingBox3D"
        report = reports[model_id]
        diagonal = math.dist(report.bbox_min, report.bbox_max)
        stated_min, stated_max = _vector(box["min_point"]), _vector(box["max_point"])
        error = max(max(abs(a - b) for a, b in zip(stated_min, report.bbox_min)), max(abs(a - b) for a, b in zip(stated_max, report.bbox_max)))
        assert error <= 1e-6 * diagonal, model_id


def test_models_match_the_regenerated_model_of_their_index(raw_models):
    """Model i depends only on (seed, i): regenerating it alone, in this process, gives the same bytes."""
    for index in (0, 1, 499, 998, 999):
        model_id = f"{index:08d}"
        regenerated = generate_model(random.Random(f"{SEED}:{index}"), model_id)
        assert dumps_model(regenerated).encode() == raw_models[model_id]


def test_all_curve_types_and_holes_occur(models):
    models_with = Counter()
    for model in models.values():
        kinds = {curve["type"] for _, curves in _curves(model) for curve in curves}
        models_with.update(kinds)
        holed = any(
            len(model["entities"][reference["sketch"]]["profiles"][reference["profile"]]["loops"]) > 1
            for extrude in _extrudes(model)
            for reference in extrude["profiles"]
        )
        models_with["extruded profile with a hole"] += holed
    assert set(models_with) == {"Line3D", "Arc3D", "Circle3D", "extruded profile with a hole"}
    assert min(models_with.values()) >= 150, models_with


def test_operations_and_extent_types_are_all_used(models):
    operations, later_operations, extent_types = Counter(), Counter(), Counter()
    for model in models.values():
        extrudes = _extrudes(model)
        assert extrudes[0]["operation"] == "NewBodyFeatureOperation"
        operations.update(extrude["operation"] for extrude in extrudes)
        later_operations.update(extrude["operation"] for extrude in extrudes[1:])
        extent_types.update(extrude["extent_type"] for extrude in extrudes)
    assert set(operations) == {"NewBodyFeatureOperation", "JoinFeatureOperation", "CutFeatureOperation", "IntersectFeatureOperation"}
    later = sum(later_operations.values())
    assert later_operations["JoinFeatureOperation"] > 0.25 * later and later_operations["CutFeatureOperation"] > 0.25 * later
    assert 0 < later_operations["NewBodyFeatureOperation"] < 0.2 * later
    assert 10 <= later_operations["IntersectFeatureOperation"] < 0.1 * later
    total = sum(extent_types.values())
    assert extent_types["OneSideFeatureExtentType"] > 0.5 * total
    assert extent_types["SymmetricFeatureExtentType"] > 0.05 * total and extent_types["TwoSidesFeatureExtentType"] > 0.05 * total


def test_extrude_counts_span_one_to_ten_mostly_one_to_three(models, reports):
    counts = Counter(len(_extrudes(model)) for model in models.values())
    assert sorted(counts) == list(range(1, 11))
    assert 0.4 * N_MODELS < counts[1] < 0.65 * N_MODELS
    assert 0.75 * N_MODELS < counts[1] + counts[2] + counts[3] < 0.95 * N_MODELS
    assert counts[4] + counts[5] + counts[6] > 0.04 * N_MODELS
    assert all(len(_extrudes(models[model_id])) <= report.n_extrudes <= 10 for model_id, report in reports.items())


def test_sketch_planes_face_many_ways(models):
    normals = Counter()
    for model in models.values():
        normals.update(tuple(round(v, 6) + 0.0 for v in _vector(sketch["transform"]["z_axis"])) for sketch in _sketches(model))
    assert AXIS_NORMALS <= set(normals)
    assert len(normals) >= 50
    later_off_origin = sum(
        any(_vector(sketch["transform"]["origin"]) != (0.0, 0.0, 0.0) for sketch in _sketches(model)[1:]) for model in models.values()
    )
    assert later_off_origin > 0.2 * N_MODELS, "later sketches should often sit on faces of earlier extrudes"


def test_sizes_span_millimetres_to_about_a_metre(reports):
    diagonals = sorted(math.dist(report.bbox_min, report.bbox_max) for report in reports.values())
    assert diagonals[0] < 0.005 and diagonals[-1] > 0.8
    assert sum(d < 0.01 for d in diagonals) > 0.05 * N_MODELS
    assert sum(d > 0.5 for d in diagonals) > 0.05 * N_MODELS
    assert diagonals[-1] < 3.0


def test_realistic_quirks_occur(models):
    seen = Counter()
    for model in models.values():
        seen["trailing unused sketch"] += model["sequence"][-1]["type"] == "Sketch"
        referenced = {(reference["sketch"], reference["profile"]) for extrude in _extrudes(model) for reference in extrude["profiles"]}
        for step in model["sequence"]:
            if step["type"] == "Sketch":
                seen["unreferenced profile"] += any((step["entity"], pid) not in referenced for pid in model["entities"][step["entity"]]["profiles"])
        for extrude in _extrudes(model):
            seen["multi-profile extrude"] += len(extrude["profiles"]) > 1
            seen["negative extent_one"] += extrude["extent_one"]["distance"]["value"] < 0.0
            seen["negative symmetric extent_one"] += (
                extrude["extent_type"] == "SymmetricFeatureExtentType" and extrude["extent_one"]["distance"]["value"] < 0.0
            )
        extrudes_per_sketch = Counter(sketch for extrude in _extrudes(model) for sketch in {ref["sketch"] for ref in extrude["profiles"]})
        seen["sketch reused by a later extrude"] += any(count > 1 for count in extrudes_per_sketch.values())
    for quirk in ("trailing unused sketch", "unreferenced profile", "multi-profile extrude", "negative extent_one", "negative symmetric extent_one", "sketch reused by a later extrude"):
        assert seen[quirk] >= 10, (quirk, seen)


def test_sketch_geometry_follows_deepcad_conventions(models):
    arc_points_to = Counter()
    flipped_normals = Counter()
    for model in models.values():
        for sketch in _sketches(model):
            transform = sketch["transform"]
            x, y, z = (_vector(transform[axis]) for axis in ("x_axis", "y_axis", "z_axis"))
            assert math.dist(y, (z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0])) < 1e-9
        for sketch, curves in _curves(model):
            normal = _vector(sketch["transform"]["z_axis"])
            for curve in curves:
                points = [curve[key] for key in ("start_point", "end_point", "center_point", "reference_vector") if key in curve]
                assert all(point["z"] == 0.0 for point in points)
                if curve["type"] == "Line3D":
                    continue
                flipped_normals[curve["type"]] += _vector(curve["normal"]) == tuple(-v for v in normal)
                assert _vector(curve["normal"]) in (normal, tuple(-v for v in normal))
                if curve["type"] == "Arc3D":
                    arc_points_to[_check_arc(curve)] += 1
    assert arc_points_to["start_point"] > 0.3 * sum(arc_points_to.values())
    assert arc_points_to["end_point"] > 0.3 * sum(arc_points_to.values())
    assert flipped_normals["Arc3D"] > 0 and flipped_normals["Circle3D"] > 0


def _check_arc(arc: dict) -> str:
    """Assert Onshape's convention (reference_vector CCW through end_angle spans the arc); say which end it starts at."""
    assert arc["start_angle"] == 0.0 and 0.0 < arc["end_angle"] < 2.0 * math.pi
    (cx, cy, _), radius = _vector(arc["center_point"]), arc["radius"]
    rx, ry, _ = _vector(arc["reference_vector"])
    assert math.hypot(rx, ry) == pytest.approx(1.0, abs=1e-12)
    sweep = arc["end_angle"]
    first = (cx + radius * rx, cy + radius * ry)
    last = (cx + radius * (rx * math.cos(sweep) - ry * math.sin(sweep)), cy + radius * (rx * math.sin(sweep) + ry * math.cos(sweep)))
    start, end = _vector(arc["start_point"])[:2], _vector(arc["end_point"])[:2]
    tolerance = 1e-9 * radius + 1e-12
    if math.dist(first, start) <= tolerance:
        assert math.dist(last, end) <= tolerance
        return "start_point"
    assert math.dist(first, end) <= tolerance and math.dist(last, start) <= tolerance
    return "end_point"


def test_ids_and_extents_follow_onshape_and_deepcad(models):
    entity_id = re.compile(r"F[A-Za-z0-9]{14}(_\d+)?")
    onshape_id = re.compile(r"J[A-Za-z0-9+/]{2}|K[A-Za-z0-9+/]{3}")
    for model in models.values():
        assert list(model) == ["entities", "properties", "sequence"]
        assert [step["index"] for step in model["sequence"]] == list(range(len(model["sequence"])))
        assert all(entity_id.fullmatch(key) for key in model["entities"])
        for number, sketch in enumerate(_sketches(model), start=1):
            assert sketch["name"] == f"Sketch {number}" and sketch["reference_plane"] == {}
            assert all(onshape_id.fullmatch(pid) for pid in sketch["profiles"])
            assert all(loop["is_outer"] is True for profile in sketch["profiles"].values() for loop in profile["loops"])
        for number, extrude in enumerate(_extrudes(model), start=1):
            assert extrude["name"] == f"Extrude {number}"
            assert extrude["start_extent"] == {"type": "ProfilePlaneStartDefinition"}
            for key, role, taper in (("extent_one", "AlongDistance", "TaperAngle"), ("extent_two", "AgainstDistance", "Side2TaperAngle")):
                extent = extrude[key]
                assert extent["type"] == "DistanceExtentDefinition"
                assert {k: v for k, v in extent["distance"].items() if k != "value"} == {"type": "ModelParameter", "role": role, "name": "none"}
                assert extent["taper_angle"] == {"type": "ModelParameter", "role": taper, "name": "none", "value": 0.0}
            if extrude["extent_type"] != "TwoSidesFeatureExtentType":
                assert extrude["extent_two"]["distance"]["value"] == 0.0


def test_files_are_formatted_like_the_python2_originals(raw_models, real_samples_dir):
    """Same separators, no final newline, and the same key order for every kind of object as a real file."""
    real = json.loads((real_samples_dir / "00001010.json").read_bytes())
    real_orders = _key_orders(real)
    generated_orders = {}
    for raw in list(raw_models.values())[:50]:
        text = raw.decode()
        assert ", \n" in text and not text.endswith("\n") and text == dumps_model(json.loads(text))
        generated_orders.update(_key_orders(json.loads(text)))
    shared = set(real_orders) & set(generated_orders)
    kinds = {"Sketch", "ExtrudeFeature", "Line3D", "Arc3D", "Circle3D", "BoundingBox3D", "ModelParameter", "DistanceExtentDefinition"}
    assert kinds <= {kind for kind, _ in shared} and len(shared) >= 15
    assert {kind: generated_orders[kind] for kind in shared} == {kind: real_orders[kind] for kind in shared}


def _key_orders(model: dict) -> dict[tuple[str, tuple[str, ...]], tuple[str, ...]]:
    """Key order of each kind of object, a kind being its "type" (if any) and its set of keys."""
    orders = {}

    def visit(value):
        if isinstance(value, dict):
            kind = value["type"] if isinstance(value.get("type"), str) else ""
            orders[kind, tuple(sorted(value))] = tuple(value)
            for child in value.values():
                visit(child)
        elif isinstance(value, list):
            for child in value:
                visit(child)

    visit(model)
    return orders


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    calls = []
    summary = write_corpus(first, 12, seed=5, progress=calls.append)
    assert {key: value for key, value in summary.to_json().items() if key != "seconds"} == {"n_models": 12, "n_train": 10, "n_validation": 1, "n_test": 1}
    write_corpus(second, 12, seed=5)
    write_corpus(other, 12, seed=6)
    assert calls == list(range(1, 13))
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert len(files) == 13
    assert files == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    differing = [name for name in files if (first / name).read_bytes() != (other / name).read_bytes()]
    assert len(differing) == 13


def test_split_file_is_disjoint_and_covers_every_model(corpus_dir, raw_models):
    split = json.loads((corpus_dir / "train_val_test_split.json").read_text())
    assert list(split) == ["train", "validation", "test"]
    assert (len(split["validation"]), len(split["test"])) == (80, 80)
    every = split["train"] + split["validation"] + split["test"]
    assert len(every) == len(set(every)) == N_MODELS
    assert sorted(every) == [f"0000/{model_id}" for model_id in raw_models]
    assert every[:5] != sorted(every)[:5], "the assignment is a shuffle"
    assert all((corpus_dir / "cad_json" / f"{key}.json").is_file() for key in split["validation"] + split["test"])


def test_small_splits_and_bucket_names():
    assert model_key(7) == "0000/00000007" and model_key(12345) == "0001/00012345" and model_key(99_999_999) == "9999/99999999"
    three = split_ids(["a", "b", "c"], seed=1)
    assert sorted(len(part) for part in three.values()) == [1, 1, 1]
    two = split_ids(["a", "b"], seed=1)
    assert sorted(two["train"]) == ["a", "b"] and two["validation"] == two["test"] == []
    assert split_ids([], seed=1) == {"train": [], "validation": [], "test": []}
    assert split_ids([str(i) for i in range(100)], seed=1) == split_ids([str(i) for i in range(100)], seed=1)
    assert split_ids([str(i) for i in range(100)], seed=1) != split_ids([str(i) for i in range(100)], seed=2)
