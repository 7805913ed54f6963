"""Seeded generator of DeepCAD-style `cad_json` models, and of a corpus laid out like DeepCAD's data folder.

The corpus lets the pipeline run end to end without downloading DeepCAD, so the models copy the
real files rather than what the reader happens to accept: the Python-2 key order and separators,
Onshape-style entity, profile and curve ids, every region face of a sketch listed as a profile,
line and arc end points in Onshape's order rather than loop order, arc and circle normals of
either sign, half-depth Symmetric extents and TwoSides extents against the normal, metres.
Every model is built with OpenCASCADE before it is kept, and its stated bounding box is the
built solid's exact box.
"""

from cad_pipeline.cad.sample_corpus.corpus import CorpusSummary, model_key, split_ids, write_corpus
from cad_pipeline.cad.sample_corpus.deepcad_format import dumps_model
from cad_pipeline.cad.sample_corpus.model import generate_model

__all__ = ["CorpusSummary", "dumps_model", "generate_model", "model_key", "split_ids", "write_corpus"]
