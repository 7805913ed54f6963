"""Publishing a set of files whole (a writer that fails or is killed at any point leaves the previous version), and
bounded reads."""

import subprocess
import sys

import pytest

from cad_pipeline.files import FileTooLarge, published_files, read_bounded

NAMES = ("samples.parquet", "aggregates.json", "answers.jsonl")


def _versions(folder):
    return {name: (folder / name).read_text() for name in NAMES}


def _publish(folder, tag):
    with published_files(folder, NAMES, ".results") as staging:
        for name in NAMES:
            (staging / name).write_text(f"{tag} {name}")


def test_a_version_is_published_whole_and_a_failed_one_leaves_the_last(tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "samples.parquet").write_text("written before versions")  # an older layout: replaced by a link
    (folder / "notes.txt").write_text("the user's")
    _publish(folder, "one")
    assert _versions(folder) == {name: f"one {name}" for name in NAMES}
    with pytest.raises(RuntimeError):
        with published_files(folder, NAMES, ".results") as staging:
            (staging / "samples.parquet").write_text("two, half written")
            raise RuntimeError("killed here")
    assert _versions(folder) == {name: f"one {name}" for name in NAMES}
    _publish(folder, "three")
    assert _versions(folder) == {name: f"three {name}" for name in NAMES}
    assert len(list((folder / ".results").iterdir())) == 2, "current and its version; the others are gone"
    assert (folder / "notes.txt").read_text() == "the user's"


WRITER = """
import sys, time
from pathlib import Path
from cad_pipeline.files import published_files

with published_files(Path(sys.argv[1]), ("a.json", "b.json"), ".results") as staging:
    (staging / "a.json").write_text("new a")
    print("half", flush=True)
    time.sleep(60)
    (staging / "b.json").write_text("new b")
"""


def test_a_writer_killed_half_way_leaves_the_previous_version(tmp_path):
    folder = tmp_path / "out"
    with published_files(folder, ("a.json", "b.json"), ".results") as staging:
        (staging / "a.json").write_text("old a")
        (staging / "b.json").write_text("old b")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "half"
    writer.kill()
    writer.wait()
    assert (folder / "a.json").read_text() == "old a" and (folder / "b.json").read_text() == "old b"


def test_a_bounded_read_stops_at_its_limit(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "small").write_bytes(b"y" * 100)
    assert read_bounded(tmp_path / "small", 100, "a test file") == b"y" * 100
    with pytest.raises(FileTooLarge, match="larger than 100 bytes"):
        read_bounded(tmp_path / "big", 100, "a test file")
    with pytest.raises(FileTooLarge):
        read_bounded("/dev/zero", 1000, "an endless device")
