"""One generated answer scored against its ground-truth model, with every metric and the reason it failed, if it did.

The answer is untrusted: its code only ever goes through the safe interpreter. A sample is invalid
when it has no python block, when the interpreter rejects the code, or when no solid can be built;
invalid samples keep the count-based scores (OpenECAD's check_scores does too) and no geometric ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from OCP.TopoDS import TopoDS_Shape

from cad_pipeline.cad.build import OCC_ERRORS, build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.measure import exact_bbox
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.program import CodeRejected
from cad_pipeline.cad.sequence import CadSequence
from cad_pipeline.evaluate.code_scores import curve_accuracy, loop_accuracy
from cad_pipeline.evaluate.deepcad_vectors import command_accuracy, command_vectors, parameter_accuracy
from cad_pipeline.evaluate.geometry import cad_recode_chamfer, deepcad_chamfer, iou
from cad_pipeline.parallel import Isolated

PROTOCOLS = {
    "command_accuracy": "DeepCAD ACC_cmd: 8-bit command vectors in the truth's normalized frame, truncated at its EOS",
    "parameter_accuracy": "DeepCAD ACC_param: |diff| < 3 on the 256 grid, exact for arc flag, operation and extent type",
    "chamfer_deepcad": "DeepCAD: 2,000 points each drawn independently, in the truth's frame (0.75 / max |bbox|), mean squared distances summed",
    "chamfer_cad_recode": "CAD-Recode: 8,192 points each drawn independently, in the unit cube of the truth's box, mean squared distances summed",
    "chamfer_deepcad_paired": "DeepCAD's frame and 2,000 points, both clouds drawn with one seed (0 for the identical solid; not comparable with papers)",
    "chamfer_cad_recode_paired": "CAD-Recode's frame and 8,192 points, both clouds drawn with one seed (0 for the identical solid; not comparable with papers)",
    "iou": "exact OpenCASCADE boolean volumes: intersection over union",
    "curve_accuracy": "OpenECAD check_scores Curve_acc (counts of add_line, add_arc, add_circle), percent",
    "loop_accuracy": "OpenECAD check_scores Loop_acc (count of add_loop), percent",
}


@dataclass(frozen=True)
class SampleScore:
    id: str
    valid: bool
    failure: str | None
    command_accuracy: float | None = None
    parameter_accuracy: float | None = None
    chamfer_deepcad: float | None = None
    chamfer_cad_recode: float | None = None
    chamfer_deepcad_paired: float | None = None
    chamfer_cad_recode_paired: float | None = None
    iou: float | None = None
    curve_accuracy: float = 0.0
    loop_accuracy: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict:
        """Everything but the id: validity, failure reason and every score."""
        return {key: value for key, value in asdict(self).items() if key != "id"}


@dataclass(frozen=True)
class ScoreJob:
    """One answer to score in a worker: the sample, its ground-truth file and code, and the predicted code."""

    sample_id: str
    truth_file: str
    truth_code: str
    code: str | None


def score_job(job: ScoreJob) -> SampleScore:
    """Worker: builds the ground truth from its file, then scores the answer against it."""
    try:
        truth = read_file(job.truth_file)
        truth_solid = build_solid(truth)
    except ModelError as error:
        raise RuntimeError(
            f"the ground truth of {job.sample_id} ({job.truth_file}) no longer builds: {error.message}; "
            "the corpus changed since the subset was made: materialize cad_subset and its downstream again"
        ) from None
    return score_code(job.sample_id, truth, truth_solid, job.truth_code, job.code)


def score_job_failed(job: ScoreJob, isolated: Isolated) -> SampleScore:
    """An answer whose scoring hung or crashed inside OpenCASCADE: invalid, with what happened."""
    counts = {"curve_accuracy": curve_accuracy(job.code, job.truth_code), "loop_accuracy": loop_accuracy(job.code, job.truth_code)}
    return SampleScore(job.sample_id, False, f"no_solid: building or scoring it ended in a {isolated.failure}: {isolated.detail}", **counts)


def score_code(sample_id: str, truth: CadSequence, truth_solid: TopoDS_Shape, truth_code: str, code: str | None) -> SampleScore:
    counts = {"curve_accuracy": curve_accuracy(code, truth_code), "loop_accuracy": loop_accuracy(code, truth_code)}
    if code is None:
        return SampleScore(sample_id, False, "no_code: the answer has no python block", **counts)
    try:
        predicted = interpret(code, sample_id)
    except CodeRejected as error:
        return SampleScore(sample_id, False, f"code_rejected: {error}", **counts)
    try:
        solid = build_solid(predicted)
    except ModelError as error:
        return SampleScore(sample_id, False, f"no_solid: {error.message}", **counts)
    except OCC_ERRORS as error:
        return SampleScore(sample_id, False, f"no_solid: OpenCASCADE failed: {error}", **counts)
    box = truth.stated_bbox or exact_bbox(truth_solid)
    truth_vectors = command_vectors(truth, normalize_to=box)
    predicted_vectors = command_vectors(predicted, normalize_to=box)
    return SampleScore(
        sample_id,
        True,
        None,
        command_accuracy=command_accuracy(predicted_vectors, truth_vectors),
        parameter_accuracy=parameter_accuracy(predicted_vectors, truth_vectors),
        chamfer_deepcad=deepcad_chamfer(truth_solid, solid, truth_bbox=box),
        chamfer_cad_recode=cad_recode_chamfer(truth_solid, solid),
        chamfer_deepcad_paired=deepcad_chamfer(truth_solid, solid, truth_bbox=box, paired=True),
        chamfer_cad_recode_paired=cad_recode_chamfer(truth_solid, solid, paired=True),
        iou=iou(truth_solid, solid),
        **counts,
    )
