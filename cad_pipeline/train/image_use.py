"""Does the model read the picture? Two measurements that a falling loss alone never shows.

A model that ignores its image still learns the code's grammar and its most typical program, and its loss falls.
Giving every sample another model's image (same answers) costs such a model nothing; a model that reads the
picture pays for the wrong one. And a model that reads the picture writes different programs for different parts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cad_pipeline.train.data import Sample

CLEAR_GAP_NATS = 0.05
"""The shuffled-image loss must exceed the true-image loss by this much per answer token to count as image use."""
VARIED_ANSWERS = 0.5
"""At least this share of the distinct models must get distinct answers."""


@dataclass(frozen=True)
class ImageUse:
    true_image_loss: float
    shuffled_image_loss: float
    """The same samples and answers, each shown the image of a sample of another model."""
    samples: int

    @property
    def gap_nats(self) -> float:
        return self.shuffled_image_loss - self.true_image_loss

    def to_json(self) -> dict:
        return {
            "true_image_loss": self.true_image_loss,
            "shuffled_image_loss": self.shuffled_image_loss,
            "image_loss_gap_nats": self.gap_nats,
            "samples": self.samples,
        }


def shuffled_images(samples: Sequence[Sample], models: Sequence[str], seed: int | str = 0) -> list[Sample]:
    """Each sample with the image of a sample of another model. The samples are laid out model by model (groups in a
    seeded order, the largest first) and every image moves on by the largest group's size, which lands each one in
    another model's group whenever no model has more than half the samples."""
    groups: dict[str, list[int]] = {}
    for index, model in enumerate(models):
        groups.setdefault(model, []).append(index)
    ordered = list(groups.values())
    random.Random(seed).shuffle(ordered)
    ordered.sort(key=len, reverse=True)
    largest = len(ordered[0]) if ordered else 0
    if 2 * largest > len(samples):
        raise ValueError(f"cannot give every sample another model's image: one model has {largest} of the {len(samples)} samples")
    layout = [index for group in ordered for index in group]
    source = {layout[position]: layout[(position + largest) % len(layout)] for position in range(len(layout))}
    return [replace(sample, image=samples[source[i]].image) for i, sample in enumerate(samples)]


def measure_image_use(loss_of, samples: Sequence[Sample], models: Sequence[str], true_image_loss: float | None = None, seed: int = 0) -> ImageUse | None:
    """`loss_of(samples)` is the mean answer-token loss of a list of samples (the validation loss); pass the loss with
    the true images when it is known already. None when the samples cannot be shuffled (one model has more than half)."""
    try:
        shuffled = shuffled_images(samples, models, seed)
    except ValueError:
        return None
    true_loss = loss_of(list(samples)) if true_image_loss is None else true_image_loss
    return ImageUse(true_loss, loss_of(shuffled), len(samples))


def with_other_models_images(samples: Sequence[Sample], pool: Sequence[Sample], seed: str) -> list[Sample]:
    """Each sample with the image of a sample of another model, the same for the same seed: the pictures the
    image-contrast term asks to explain each answer worse than its own. Taken from the samples themselves where they
    allow it, so that within one step every picture is both the right one for its answer and the wrong one for
    another (a tiny model trained from scratch learns to read drawings from that, and not from pictures drawn from
    elsewhere); otherwise drawn from `pool`, which must show at least two models."""
    try:
        return shuffled_images(samples, [model_of_image(sample.image) for sample in samples], seed)
    except ValueError:
        pass
    draw = random.Random(seed)
    shown = []
    for sample in samples:
        own = model_of_image(sample.image)
        other = pool[draw.randrange(len(pool))]
        while model_of_image(other.image) == own:
            other = pool[draw.randrange(len(pool))]
        shown.append(replace(sample, image=other.image))
    return shown


def model_of_image(image: Path) -> str:
    """The model an image shows: images are named `<model>_<view>.png` (`render.batch.image_file_name`)."""
    return image.stem.rsplit("_", 1)[0]


def distinct_answer_share(answers: Sequence[str], models: Sequence[str]) -> float:
    """Distinct answers over distinct models: 1.0 when every part gets its own program, 1/n when all get one."""
    distinct_models = len(set(models))
    return min(1.0, len({answer.strip() for answer in answers}) / distinct_models) if distinct_models else float("nan")


def uses_image(image_use: ImageUse | None, answer_share: float | None) -> tuple[bool, str]:
    """The verdict of the `uses_image` check, with the reason a user reads first."""
    problems = []
    if image_use is not None and not image_use.gap_nats > CLEAR_GAP_NATS:
        problems.append(
            f"the loss with shuffled images ({image_use.shuffled_image_loss:.4f}) is not clearly above the loss with each "
            f"sample's own image ({image_use.true_image_loss:.4f}): gap {image_use.gap_nats:+.4f} nats, needs > {CLEAR_GAP_NATS}"
        )
    if answer_share is not None and not answer_share >= VARIED_ANSWERS:
        problems.append(f"only {answer_share:.0%} of the distinct models got distinct answers (needs {VARIED_ANSWERS:.0%})")
    if problems:
        return False, "the model ignores its picture: " + "; ".join(problems)
    return True, "the model reads its picture"
