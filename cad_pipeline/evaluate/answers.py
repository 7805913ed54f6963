"""The evaluation's answers file: every generated answer appended as one JSON line as soon as its batch ends, so an
evaluation that is killed or runs out of its budget keeps what it generated, and its rerun generates only the rest.

The first line holds the fingerprint of what decides an answer's text; a file written for another adapter or other
generation settings is started anew.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from cad_pipeline.evaluate.config import EvaluationConfig
from cad_pipeline.evaluate.generate import Answer
from cad_pipeline.files import atomic_write_bytes

ANSWERS_FILE = "answers.jsonl"
ANSWER_SETTINGS = ("max_new_tokens", "generation_batch_size", "generation_batch_budget")
"""The settings an answer's text depends on. The sample limit, the baseline and the overall budget only decide which
answers are needed, so changing them keeps those already generated."""


def generation_fingerprint(adapter_dir: Path, config: EvaluationConfig) -> str:
    """A digest of the adapter folder's files, byte for byte, and of the settings an answer depends on."""
    files = {}
    for path in sorted(adapter_dir.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                files[path.relative_to(adapter_dir).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    settings = {name: getattr(config, name) for name in ANSWER_SETTINGS}
    return hashlib.sha256(json.dumps({"adapter": files, "settings": settings}, sort_keys=True).encode()).hexdigest()


class AnswersFile:
    """The answers of one evaluation folder, by variant and sample id."""

    def __init__(self, path: Path, fingerprint: str):
        """Keeps the answers `path` holds when it was written for `fingerprint`, up to a line torn by a kill, and
        rewrites the file (atomically) with just those; any other file is replaced by an empty one."""
        self.path = path
        self.restarted = False
        """Whether an existing file was written for another adapter or other settings and is started anew."""
        self._answers: dict[tuple[str, str], Answer] = {}
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        if lines:
            if _header(lines[0]) == fingerprint:
                self._keep(lines[1:])
            else:
                self.restarted = True
        header = json.dumps({"fingerprint": fingerprint})
        atomic_write_bytes(path, "".join(line + "\n" for line in [header, *map(_line, self._answers.items())]).encode())

    def answers(self, variant: str) -> dict[str, Answer]:
        return {sample_id: answer for (of, sample_id), answer in self._answers.items() if of == variant}

    def append(self, variant: str, records: list[dict], answers: list[Answer]) -> None:
        """One batch's answers, on disk before the next batch starts."""
        entries = [((variant, record["id"]), answer) for record, answer in zip(records, answers, strict=True)]
        self._answers.update(entries)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(_line(entry) + "\n" for entry in entries))
            handle.flush()
            os.fsync(handle.fileno())

    def _keep(self, lines: list[str]) -> None:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return
            key = (entry.pop("variant"), entry.pop("sample_id"))
            self._answers[key] = Answer(**entry)


def _header(line: str) -> str | None:
    try:
        return json.loads(line).get("fingerprint")
    except (json.JSONDecodeError, AttributeError):
        return None


def _line(entry: tuple[tuple[str, str], Answer]) -> str:
    (variant, sample_id), answer = entry
    return json.dumps({"variant": variant, "sample_id": sample_id, **asdict(answer)})
