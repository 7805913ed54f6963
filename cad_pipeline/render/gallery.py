"""A small contact sheet of drawings for previews: rows of models, columns of views."""

from __future__ import annotations

import numpy as np

from cad_pipeline.render.drawing import encode_png


def contact_sheet(rows: list[list[np.ndarray]], factor: int) -> bytes:
    """PNG of the images shrunk by `factor` (darkest pixel of each block, so thin lines survive), with 1-px gutters."""
    shrunk = [[_min_pool(image, factor) for image in row] for row in rows]
    cell = shrunk[0][0].shape[0]
    columns = max(len(row) for row in shrunk)
    sheet = np.full((len(shrunk) * (cell + 1) - 1, columns * (cell + 1) - 1), 200, dtype=np.uint8)
    for r, row in enumerate(shrunk):
        for c, image in enumerate(row):
            sheet[r * (cell + 1) : r * (cell + 1) + cell, c * (cell + 1) : c * (cell + 1) + cell] = image
    return encode_png(sheet)


def _min_pool(image: np.ndarray, factor: int) -> np.ndarray:
    size = image.shape[0] // factor * factor
    blocks = image[:size, :size].reshape(size // factor, factor, size // factor, factor)
    return blocks.min(axis=(1, 3))
