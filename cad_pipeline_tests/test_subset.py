"""Nested deterministic subsets on a corpus of real DeepCAD models plus broken files."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from cad_pipeline.dataset.corpus import Corpus, CorpusError
from cad_pipeline.dataset.scales import configured_scales, estimated_full_train_models, planned_scales, scale_size, validation_size
from cad_pipeline.dataset.subset import ScaleTooLarge, select_subset, seeded_order, write_manifest
from cad_pipeline.parallel import process_pool
from cad_pipeline_tests.conftest import REAL_SAMPLES

VALID_REAL = 11


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory) -> Corpus:
    """The 12 real samples, a truncated file and an id without a file, in DeepCAD's layout."""
    root = tmp_path_factory.mktemp("real_corpus")
    ids = []
    for path in sorted(REAL_SAMPLES.glob("0*.json")):
        bucket = path.stem[:4]
        (root / "cad_json" / bucket).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "cad_json" / bucket / path.name)
        ids.append(f"{bucket}/{path.stem}")
    truncated = (REAL_SAMPLES / "00000330.json").read_bytes()[:500]
    (root / "cad_json" / "0099").mkdir()
    (root / "cad_json" / "0099" / "00990000.json").write_bytes(truncated)
    train = ids[:9] + ["0099/00990000", "0099/00990001"]
    split = {"train": train, "validation": ids[9:11], "test": ids[11:]}
    (root / "train_val_test_split.json").write_text(json.dumps(split))
    return Corpus.open(root)


def _selected_train(result) -> list[str]:
    manifest = result.manifest
    return manifest[manifest.selected & (manifest.split == "train")].id.tolist()


def test_smaller_scale_is_a_prefix_of_the_larger(real_corpus):
    with ThreadPoolExecutor(2) as executor:
        small = select_subset(real_corpus, 3, seed=7, executor=executor)
        large = select_subset(real_corpus, 7, seed=7, executor=executor)
    assert len(_selected_train(small)) == 3
    assert len(_selected_train(large)) == 7
    assert _selected_train(large)[:3] == _selected_train(small)


def test_full_scale_skips_and_lists_unbuildable_models_with_reasons(real_corpus):
    with ThreadPoolExecutor(2) as executor:
        result = select_subset(real_corpus, None, seed=0, executor=executor)
    manifest = result.manifest.set_index("id")
    assert result.n_train == 8  # 9 real train ids, one of them (00000175) has only empty profiles
    assert result.invalid_by_reason == {"empty_profiles": 1, "invalid_json": 1, "unreadable_file": 1}
    assert manifest.loc["0000/00000175", "reason_code"] == "empty_profiles"
    assert "profile" in manifest.loc["0000/00000175", "reason"]
    assert not manifest.loc["0099/00990000", "selected"]
    assert manifest.loc["0000/00000007", "volume"] == pytest.approx(0.000661499126917513, rel=1e-6)
    assert manifest.loc["0000/00000007", "bbox_max_z"] == pytest.approx(0.0254, rel=1e-9)
    assert len(manifest.loc["0000/00000007", "sha256"]) == 64
    assert result.n_validation == validation_size(8, 2) == 0


def test_validation_share_is_a_tenth_or_all_available(real_corpus):
    with ThreadPoolExecutor(2) as executor:
        result = select_subset(real_corpus, None, seed=0, executor=executor)
    assert result.n_validation == min(result.n_train // 10, 2)


def test_scale_larger_than_the_corpus_names_its_size_and_the_way_out(real_corpus):
    with ThreadPoolExecutor(1) as executor:
        with pytest.raises(ScaleTooLarge) as too_many_ids:
            select_subset(real_corpus, 1000, seed=0, executor=executor)
        with pytest.raises(ScaleTooLarge) as too_few_valid:
            select_subset(real_corpus, 10, seed=0, executor=executor)
    assert "1,000" in str(too_many_ids.value) and "has 11" in str(too_many_ids.value)
    assert "CAD_PIPELINE_CORPUS" in str(too_many_ids.value)
    assert "only 8" in str(too_few_valid.value)


def test_same_seed_same_manifest_in_a_process_pool(real_corpus, tmp_path):
    with process_pool(2) as pool:
        first = select_subset(real_corpus, 5, seed=3, executor=pool)
    with ThreadPoolExecutor(2) as executor:
        second = select_subset(real_corpus, 5, seed=3, executor=executor)
        other_seed = select_subset(real_corpus, 5, seed=4, executor=executor)
    write_manifest(first, tmp_path / "manifest.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "manifest.parquet"), second.manifest)
    assert _selected_train(other_seed) != _selected_train(first)


def test_seeded_order_ignores_how_the_split_lists_ids():
    ids = [f"0000/{i:08d}" for i in range(50)]
    assert seeded_order(ids, 1) == seeded_order(list(reversed(ids)), 1)
    assert seeded_order(ids, 1) != seeded_order(ids, 2)


def test_missing_split_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(CorpusError, match="train_val_test_split.json.*CAD_PIPELINE_CORPUS"):
        Corpus.open(tmp_path)


@pytest.mark.parametrize(("name", "size"), [("1k", 1000), ("10k", 10000), ("2.5k", 2500), ("1m", 1_000_000), ("500", 500), ("full", None)])
def test_scale_names(name, size):
    assert scale_size(name) == size


@pytest.mark.parametrize("name", ["", "k", "0", "1.5", "ten", "-1k"])
def test_bad_scale_names_are_rejected(name):
    with pytest.raises(ValueError):
        scale_size(name)


def test_configured_scales_are_sorted_smallest_first(monkeypatch):
    monkeypatch.setenv("CAD_PIPELINE_SCALES", "full,10k,50k,1k")
    assert configured_scales() == ["1k", "10k", "50k", "full"]


def test_store_lets_a_larger_scale_reuse_every_model_a_smaller_one_built(real_corpus, tmp_path):
    with ThreadPoolExecutor(2) as executor:
        small = select_subset(real_corpus, 3, seed=5, executor=executor, store=tmp_path)
        large = select_subset(real_corpus, 7, seed=5, executor=executor, store=tmp_path)
        again = select_subset(real_corpus, 7, seed=5, executor=executor, store=tmp_path)
        unstored = select_subset(real_corpus, 7, seed=5, executor=executor)
    assert small.n_reused == 0
    built_before = set(small.manifest.id[small.manifest.sha256.notna()])
    reused_now = set(large.manifest.id[large.manifest.reused])
    assert built_before <= reused_now  # batches may build a few models past the last one a scale needs
    assert again.n_reused == again.manifest.sha256.notna().sum()
    columns = [c for c in unstored.manifest.columns if c != "reused"]
    pd.testing.assert_frame_equal(again.manifest[columns], unstored.manifest[columns])


def test_changed_file_content_is_built_again(real_corpus, tmp_path):
    corpus_copy = tmp_path / "corpus"
    shutil.copytree(real_corpus.root, corpus_copy)
    corpus = Corpus.open(corpus_copy)
    with ThreadPoolExecutor(2) as executor:
        select_subset(corpus, None, seed=0, executor=executor, store=tmp_path / "store")
        target = corpus.path_of("0000/00000007")
        data = json.loads(target.read_text())
        for entity in data["entities"].values():
            if entity["type"] == "ExtrudeFeature":
                entity["extent_one"]["distance"]["value"] *= 2
        target.write_text(json.dumps(data))
        result = select_subset(corpus, None, seed=0, executor=executor, store=tmp_path / "store")
    row = result.manifest.set_index("id").loc["0000/00000007"]
    assert not row.reused
    assert row.volume == pytest.approx(2 * 0.000661499126917513, rel=1e-6)
    assert result.n_reused == result.manifest.sha256.notna().sum() - 1


def test_plans_cover_the_scales_the_corpus_can_fill_with_full_estimated_from_the_build_rate():
    assert estimated_full_train_models(140_000, examined=1_100, valid=990) == 126_000
    assert planned_scales(["1k", "10k", "100k", "full"], 126_000) == [("1k", 1_000), ("10k", 10_000), ("100k", 100_000), ("full", 126_000)]
    assert planned_scales(["1k", "10k", "full"], 1_092) == [("1k", 1_000), ("full", 1_092)]


def test_ids_that_leave_the_corpus_or_repeat_are_refused_and_listed(tmp_path):
    """A split file may list `..`, absolute or deeper paths, links out of the corpus and the same id twice (within a
    split or across two): none of them is read, each is listed with its reason, and the real models beside them are
    selected as usual."""
    root = tmp_path / "corpus"
    (root / "cad_json" / "0000").mkdir(parents=True)
    real = [path.stem for path in sorted(REAL_SAMPLES.glob("0*.json")) if path.stem != "00000175"]
    for name in real:
        shutil.copy(REAL_SAMPLES / f"{name}.json", root / "cad_json" / "0000" / f"{name}.json")
    outside = tmp_path / "secret"
    outside.mkdir()
    shutil.copy(REAL_SAMPLES / "00000175.json", outside / "00000175.json")
    (root / "cad_json" / "0001").symlink_to(outside)
    unsafe = ["../../secret/00000175", "/etc/passwd", "0000/x/00000007", "0001/00000175", "0000/./00000007", ""]
    train = [f"0000/{name}" for name in real[:10]]
    split = {"train": [*train, train[3], *unsafe], "validation": [f"0000/{real[10]}", train[0]], "test": []}
    (root / "train_val_test_split.json").write_text(json.dumps(split))
    with ThreadPoolExecutor(2) as executor:
        result = select_subset(Corpus.open(root), None, seed=0, executor=executor)
    manifest = result.manifest
    assert sorted(manifest[manifest.selected].id) == sorted([*train, f"0000/{real[10]}"])
    assert result.invalid_by_reason == {"unsafe_id": len(unsafe), "duplicate_id": 2}
    refused = manifest[~manifest.valid].set_index("id")
    assert set(refused[refused.reason_code == "unsafe_id"].index) == set(unsafe)
    assert "outside the corpus" in refused.loc["0001/00000175", "reason"] and str(outside) in refused.loc["0001/00000175", "reason"]
    duplicates = manifest[manifest.reason_code == "duplicate_id"]
    assert sorted(zip(duplicates.id, duplicates.split)) == sorted([(train[3], "train"), (train[0], "validation")])
    assert refused.loc["../../secret/00000175"].isna()["volume"]
