"""Line drawings of real DeepCAD models: every view renders, holes show, framing is exact, output is deterministic."""

import itertools
import json

import numpy as np
import pytest

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.measure import exact_bbox
from cad_pipeline.parallel import process_pool
from cad_pipeline.render.batch import RenderSettings
from cad_pipeline.render.drawing import LineStyle, draw_grid, draw_views, encode_png, frame_views
from cad_pipeline.render.views import VIEWS, parse_views
from cad_pipeline_tests.conftest import REAL_SAMPLES

EXPECTED = json.loads((REAL_SAMPLES / "expected.json").read_text())["models"]
VALID = sorted(name.removesuffix(".json") for name, facts in EXPECTED.items() if facts["valid"])
STYLE = LineStyle()
HIDDEN = STYLE.hidden_gray


def _solid(name: str):
    return build_solid(read_file(REAL_SAMPLES / f"{name}.json"))


def _render_png(name: str) -> bytes:
    image = draw_views(_solid(name), parse_views("front"), STYLE)["front"]
    return encode_png(image)


@pytest.mark.parametrize("name", VALID)
def test_every_valid_model_renders_in_every_view(name):
    images = draw_views(_solid(name), list(VIEWS.values()), STYLE)
    assert set(images) == set(VIEWS)
    for view, image in images.items():
        assert image.shape == (512, 512) and image.dtype == np.uint8
        assert (image == 0).sum() > 100, f"{name} {view} has almost no visible lines"
        assert set(np.unique(image)) <= {0, HIDDEN, 255}


@pytest.mark.parametrize("name", VALID)
def test_drawing_spans_the_projected_bounding_box_within_two_pixels(name):
    shape = _solid(name)
    views = parse_views("front,top,right")
    framing = frame_views(shape, views, STYLE)
    low, high = exact_bbox(shape)
    corners = np.array(list(itertools.product(*zip(low, high))))
    for view, image in draw_views(shape, views, STYLE).items():
        projected = framing.to_pixels(VIEWS[view], np.array([VIEWS[view].project(c) for c in corners]), STYLE.size)
        rows, columns = np.nonzero(image < 255)
        drawn = np.array([[columns.min(), rows.min()], [columns.max() + 1, rows.max() + 1]])
        expected = np.array([projected.min(axis=0), projected.max(axis=0)])
        assert np.abs(drawn - expected).max() <= 2.0, f"{name} {view}: drawn {drawn.tolist()} vs {expected.tolist()}"


def test_through_hole_of_a_plate_shows_as_dashed_hidden_lines_in_the_front_view():
    """00809394 is a 6.35 mm disk of radius 31.75 mm with a 11.1125 mm through hole at its centre."""
    shape = _solid("00809394")
    views = parse_views("front")
    framing = frame_views(shape, views, STYLE)
    front = draw_views(shape, views, STYLE)["front"]
    top_px, bottom_px = framing.to_pixels(VIEWS["front"], np.array([[0.0, 0.00635], [0.0, 0.0]]), STYLE.size)[:, 1]
    for edge_x in (-0.0111125, 0.0111125):
        column = int(framing.to_pixels(VIEWS["front"], np.array([[edge_x, 0.0]]), STYLE.size)[0, 0])
        strip = front[int(top_px) + 3 : int(bottom_px) - 2, column - 1 : column + 2]
        hidden_rows = (strip == HIDDEN).any(axis=1)
        assert hidden_rows.sum() >= 5, "the hole's wall is not drawn as a hidden line"
        assert not hidden_rows.all(), "the hidden line is not dashed"
    outside = int(framing.to_pixels(VIEWS["front"], np.array([[0.02, 0.0]]), STYLE.size)[0, 0])
    assert not (front[int(top_px) + 3 : int(bottom_px) - 2, outside - 1 : outside + 2] == HIDDEN).any()


def test_hidden_dashes_follow_the_style():
    """Along a long hidden line the gray runs and gaps have the configured lengths."""
    shape = _solid("00005082")
    front = draw_views(shape, parse_views("front"), STYLE)["front"]
    runs = []
    for row in front:
        gray = np.flatnonzero(row == HIDDEN)
        if len(gray) > 40:
            breaks = np.flatnonzero(np.diff(gray) > 1)
            runs.extend(np.diff(np.concatenate(([0], breaks + 1, [len(gray)]))))
    assert runs, "no long hidden line in the front view of 00005082"
    assert np.median(runs) == pytest.approx(STYLE.dash_on, abs=1)


def test_same_model_gives_identical_png_bytes_across_processes():
    names = ["00000330", "00001616", "00809394"]
    here = [_render_png(name) for name in names]
    with process_pool(2) as pool:
        there = list(pool.map(_render_png, names))
    assert here == there
    assert here == [_render_png(name) for name in names]


def test_unknown_view_names_are_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="front, back, top, bottom, right, left, iso"):
        parse_views("front,side")


def test_grid_holds_iso_front_top_right_at_half_size_and_one_scale():
    shape = _solid("00809394")
    grid = draw_grid(shape, STYLE)
    half = STYLE.size // 2
    quadrants = {"iso": grid[:half, :half], "front": grid[:half, half:], "top": grid[half:, :half], "right": grid[half:, half:]}
    singles = draw_views(shape, parse_views("iso,front,top,right"), LineStyle(size=half))
    for name, quadrant in quadrants.items():
        assert np.array_equal(quadrant, singles[name]), name
    assert grid.shape == (512, 512)


def test_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match="layout .mosaic.: must be one of per_view, grid"):
        RenderSettings(layout="mosaic")


def test_shaded_style_paints_the_body_and_leaves_the_through_hole_open():
    """00809394 seen from the top: a grey ring with a white hole in the middle and dark outlines."""
    shape = _solid("00809394")
    views = parse_views("top")
    style = LineStyle(shaded=True)
    framing = frame_views(shape, views, style)
    top = draw_views(shape, views, style)["top"]
    center, ring = framing.to_pixels(VIEWS["top"], np.array([[0.0, 0.0], [0.02, 0.0]]), style.size).astype(int)
    assert top[center[1], center[0]] == 255
    assert 60 < top[ring[1], ring[0]] < 230
    assert (top == 0).sum() > 100
    assert np.array_equal(top, draw_views(shape, views, style)["top"])
