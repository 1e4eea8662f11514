"""The standard table: every dataset of the suite end to end on tfds's mock data, its class names,
templates and metric, the derived labels, the table, the comparison and the bad inputs."""

import csv

import numpy as np
import pytest

from contrastive.evaluate import imagenet
from contrastive.evaluate import runner
from contrastive.evaluate import suite
from contrastive.evaluate import suite_datasets
from contrastive.evaluate import suite_labels
from contrastive.evaluate import tasks as tasks_lib
from contrastive.evaluate import zeroshot
from tests.evaluate import test_suite_mock as mock

# name: (classes, templates, metric), from the sources cited in suite_datasets.
EXPECTED = {
  "imagenet1k": (1000, 80, "top1"),
  "imagenet_v2": (1000, 80, "top1"),
  "imagenet_sketch": (1000, 80, "top1"),
  "imagenet_a": (200, 80, "top1"),
  "imagenet_r": (200, 80, "top1"),
  "imagenet_real": (1000, 80, "top1"),
  "cifar10": (10, 18, "top1"),
  "cifar100": (100, 18, "top1"),
  "food101": (101, 1, "top1"),
  "pets": (37, 1, "mean_per_class"),
  "flowers": (102, 1, "mean_per_class"),
  "dtd": (47, 8, "top1"),
  "eurosat": (10, 3, "top1"),
  "resisc45": (45, 4, "top1"),
  "svhn": (10, 6, "top1"),
  "mnist": (10, 1, "top1"),
  "stl10": (10, 2, "top1"),
  "caltech101": (102, 34, "mean_per_class"),
  "sun397": (397, 2, "top1"),
  "cars": (196, 8, "top1"),
  "pcam": (2, 2, "top1"),
  "clevr_count": (8, 1, "top1"),
  "clevr_distance": (6, 1, "top1"),
  "kitti_distance": (4, 1, "top1"),
  "dmlab": (6, 1, "top1"),
  "diabetic_retinopathy": (5, 1, "top1"),
}
ZEROSHOT = [d.name for d in suite_datasets.DATASETS if d.kind == "zeroshot"]


def test_the_table_covers_every_zeroshot_dataset():
  assert sorted(ZEROSHOT) == sorted(EXPECTED)
  assert set(suite_datasets.SUITES["quick"]) <= set(ZEROSHOT)
  assert suite_datasets.SUITES["clip"] == tuple(d.name for d in suite_datasets.DATASETS)


@pytest.fixture(scope="module")
def mock_run():
  """Every zero-shot dataset on 48 mock records (the fake model), in one evaluation."""
  with mock.mock_tfds(48):
    tasks, skipped = suite.suite_tasks(ZEROSHOT, require_prepared=False)
    metrics = runner.run_tasks(mock.embed_fn, tasks, prepare=mock.prepare, batch_size=512)
    rows = suite.table_rows(ZEROSHOT, tasks, metrics, skipped)  # counts the mock records
  return tasks, skipped, metrics, {r["dataset"]: r for r in rows}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_dataset_runs_on_its_mock_data(mock_run, name):
  tasks, skipped, metrics, rows = mock_run
  classes, templates, metric = EXPECTED[name]
  assert not skipped
  task = tasks[name]
  assert len(task["class_names"]) == classes and len(task["templates"]) == templates
  assert all("{}" in t for t in task["templates"])
  assert suite_datasets.BY_NAME[name].metrics == (metric,)
  assert 0.0 <= metrics[f"{name}/{metric}"] <= 1.0
  row = rows[name]
  assert (row["metric"], row["classes"], row["templates"], row["status"]) == (
    metric,
    classes,
    templates,
    "ran",
  )
  assert row["value"] == metrics[f"{name}/{metric}"] and row["examples"] == 48


def test_the_dataset_own_names_are_cleaned_tfds_names(mock_run):
  tasks = mock_run[0]
  assert tasks["food101"]["class_names"][:2] == ["apple pie", "baby back ribs"]
  assert tasks["sun397"]["class_names"][0] == "abbey"
  assert tasks["sun397"]["class_names"][-1] == "youth hostel"
  assert tasks["sun397"]["class_names"][-3] == "wrestling ring indoor"
  assert tasks["imagenet1k"]["templates"] == list(imagenet.OPENAI_IMAGENET_TEMPLATES)
  assert tasks["cifar10"]["class_names"][:2] == ["airplane", "automobile"]
  assert tasks["mnist"]["templates"] == ['a photo of the number: "{}".']


def test_mean_per_class_accuracy_against_a_hand_computed_case():
  # Class 0 has 3 examples (2 right), class 1 one (right), class 2 two (none right):
  # top-1 = 3/6, mean per class = (2/3 + 1 + 0) / 3.
  prototypes = np.eye(3, dtype=np.float32)
  predicted = [0, 0, 1, 1, 0, 1]
  labels = np.array([0, 0, 0, 1, 2, 2])
  out = zeroshot.zeroshot_metrics(prototypes[predicted], prototypes, labels=labels, ks=(1,))
  np.testing.assert_allclose(out["top1"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(out["mean_per_class"], (2 / 3 + 1 + 0) / 3, rtol=1e-6)
  for name in ("pets", "flowers", "caltech101"):
    assert suite_datasets.BY_NAME[name].metric == "mean_per_class"


def test_imagenet_a_and_r_keep_the_right_200_classes():
  import tensorflow_datasets as tfds

  wnids = tfds.builder("imagenet2012").info.features["label"].names
  for name, first in (
    ("imagenet_a", [6, 11, 13, 15, 17, 22, 23, 27, 30, 37]),
    ("imagenet_r", [1, 2, 4, 6, 8, 9, 11, 13, 22, 23]),
  ):
    table = suite_labels._subsets()[name]
    indices = suite_labels.subset_indices(name)
    assert len(set(indices)) == 200 and list(indices) == sorted(indices)
    assert [wnids[i] for i in indices] == table["wnids"]
    assert list(indices[:10]) == first  # the authors' indices_in_1k
    names = suite_datasets.class_names(name)
    assert names == tuple(imagenet.IMAGENET_CLASSNAMES[i] for i in indices)
  assert suite_datasets.class_names("imagenet_a")[0] == "stingray"
  labels, keep = suite_labels.transform("imagenet_a", [6, 0, 11, 999], 200)
  np.testing.assert_array_equal(keep, [True, False, True, False])
  np.testing.assert_array_equal(labels, [0, 1])


def test_real_labels_are_multi_hot_and_empty_sets_are_left_out():
  labels, keep = suite_labels.transform("real", [np.array([3, 5]), np.array([], int), [1]], 6)
  np.testing.assert_array_equal(keep, [True, False, True])
  np.testing.assert_array_equal(labels, [[0, 0, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0]])


def test_vtab_labels_as_vtab_derives_them():
  objects = [{"size": np.zeros(n)} for n in (3, 10, 2)]
  labels, keep = suite_labels.transform("clevr_count", objects, 8)
  np.testing.assert_array_equal(labels, [0, 7])
  np.testing.assert_array_equal(keep, [True, True, False])
  coords = [np.array([[0, 0, 9.2], [0, 0, 12.0]]), np.array([[0, 0, 7.0]]), np.array([[0, 0, 50]])]
  labels, _ = suite_labels.transform("clevr_distance", [{"pixel_coords": c} for c in coords], 6)
  np.testing.assert_array_equal(labels, [3, 0, 5])  # 9 < 9.2 <= 9.5; 0 < 7 <= 8; 10 < 50
  kitti = [
    {"type": np.array([0, 5]), "location": np.array([[0, 0, 5.0], [0, 0, 1.0]])},  # car at 5 m
    {"type": np.array([2]), "location": np.array([[0, 0, 30.0]])},  # truck at 30 m
    {"type": np.array([4]), "location": np.array([[0, 0, 2.0]])},  # no vehicle
    {"type": np.array([1]), "location": np.array([[0, 0, 10.0]])},  # van at 10 m
  ]
  labels, _ = suite_labels.transform("kitti_distance", kitti, 4)
  np.testing.assert_array_equal(labels, [0, 2, 3, 1])


def _coco_source(n=6):
  from contrastive.evaluate import sources

  class Coco:
    """Records as tfds coco_captions gives them, `captions` renamed to `label`."""

    def __len__(self):
      return n

    def __getitem__(self, i):
      texts = [f"picture {i} caption {k}".encode() for k in range(5)]
      return {"image": np.full((4, 4, 3), 40 * i, np.uint8), "label": {"id": np.arange(5),
              "text": np.asarray(texts, object)}}  # fmt: skip

  return sources.EvalSource(Coco())


def test_coco_retrieval_counts_five_captions_per_image():
  task = suite_datasets.BY_NAME["coco"].task()
  assert task["source"]["label_key"] == "captions" and task["caption_key"] == "label/text"
  values = [_coco_source().source[i]["label"] for i in range(6)]
  field = tasks_lib._field({"label": values}, "label/text")
  texts, owner = tasks_lib._captions(field, "label/text")
  assert len(texts) == 30 and np.bincount(owner).tolist() == [5] * 6
  task["source"] = {"name": "coco"}
  metrics = runner.run_tasks(
    mock.embed_fn, {"coco": task}, prepare=mock.prepare, batch_size=8,
    sources={"coco": lambda: _coco_source()},
  )  # fmt: skip
  for key in suite_datasets.RETRIEVAL_METRICS:
    assert 0.0 <= metrics[f"coco/{key}"] <= 1.0


def _rows():
  tasks = {"cifar10": {"class_names": ["a"] * 10, "templates": ["{}"] * 18, "source": {}}}
  tasks["pets"] = {"class_names": ["a"] * 37, "templates": ["{}"], "source": {}}
  tasks["imagenet1k"] = {"class_names": ["a"] * 1000, "templates": ["{}"] * 80, "source": {}}
  metrics = {"cifar10/top1": 0.5, "pets/mean_per_class": 0.25, "imagenet1k/top1": 0.75}
  return suite.table_rows(
    "imagenet1k,cifar10,pets,mnist", tasks, metrics, {"mnist": "mnist: not prepared"}
  )


def test_the_table_rows_and_averages():
  rows = _rows()
  by = {(r["dataset"], r["metric"]): r for r in rows}
  assert by[("mnist", "top1")]["value"] is None
  assert by[("mnist", "top1")]["status"] == "mnist: not prepared"
  np.testing.assert_allclose(by[("mean other zero-shot", "mean")]["value"], 0.375)
  np.testing.assert_allclose(by[("mean ImageNet and variants", "mean")]["value"], 0.75)
  np.testing.assert_allclose(by[("mean zero-shot classification", "mean")]["value"], 0.5)
  assert by[("mean zero-shot classification", "mean")]["status"] == "3 ran"


def test_the_csv_columns_and_the_markdown(tmp_path):
  md, path = suite.write_table(_rows(), tmp_path)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == suite.COLUMNS
    rows = list(reader)
  assert rows[1]["dataset"] == "cifar10" and float(rows[1]["value"]) == 0.5
  assert rows[1]["classes"] == "10" and rows[1]["templates"] == "18"
  text = open(md).read()
  assert "| cifar10 | top1 | 50.00 |" in text
  assert "3 dataset metrics ran, 1 skipped." in text
  assert "- mnist (top1): mnist: not prepared" in text


def test_the_comparison_gives_the_differences(tmp_path):
  other = _rows()
  for r in other:
    if r["value"] is not None:
      r["value"] -= 0.125
  other = [r for r in other if r["dataset"] != "pets"]
  _, path = suite.write_table(other, tmp_path)
  compared = suite.compare(_rows(), suite.read_table(path))
  by = {(r["dataset"], r["metric"]): r for r in compared}
  np.testing.assert_allclose(by[("cifar10", "top1")]["diff"], 0.125)
  np.testing.assert_allclose(by[("cifar10", "top1")]["other"], 0.375)
  assert by[("pets", "mean_per_class")]["other"] is None
  assert by[("pets", "mean_per_class")]["diff"] is None
  md, csv_path = suite.write_table(compared, tmp_path / "cmp")
  assert open(csv_path).readline().strip().endswith("other,diff")
  assert "| cifar10 | top1 | 50.00 | 37.50 | 12.50 |" in open(md).read()


def test_a_dataset_not_prepared_is_skipped_with_how_to_prepare_it(tmp_path):
  tasks, skipped = suite.suite_tasks("quick,flickr30k", data_dir=str(tmp_path))
  assert not tasks and sorted(skipped) == sorted(suite_datasets.SUITES["quick"] + ("flickr30k",))
  assert f"tfds build cifar10 --data_dir {tmp_path}" in skipped["cifar10"]
  assert "contrastive.data.build" in skipped["flickr30k"]
  coco = suite.unavailable(suite_datasets.BY_NAME["coco"], data_dir=str(tmp_path), paths={})
  assert coco.startswith("coco: ") and "coco_captions" in coco and "\n" not in coco
  assert all("\n" not in v for v in skipped.values())


def test_unknown_names_list_the_known_ones_closest_first():
  closest = r"known \(closest first\): "
  with pytest.raises(ValueError, match=r"Unknown suite or dataset 'quik'; " + closest + "quick"):
    suite_datasets.resolve("quik")
  with pytest.raises(ValueError, match=r"Unknown dataset 'cifar1O'; " + closest + "cifar10"):
    suite_datasets.resolve("cifar1O,pets")
  with pytest.raises(ValueError, match="Unknown template set"):
    suite_datasets.templates("nope")
  with pytest.raises(ValueError, match="Unknown label_transform"):
    suite_labels.transform("nope", [1], 2)


def test_a_dataset_with_no_class_names_is_one_line():
  with pytest.raises(ValueError, match="no class names of its own") as info:
    suite_datasets.BY_NAME["dtd"].task(tfds_names=None)
  assert "\n" not in str(info.value)


def test_flickr30k_reads_an_arrayrecord_folder_with_five_captions_an_image(tmp_path):
  import json

  from contrastive.data import build

  images = tmp_path / "images"
  images.mkdir()
  with open(tmp_path / "captions.jsonl", "w") as f:
    for i in range(4):
      (images / f"{i}.png").write_bytes(mock._png(np.full((8, 8, 3), 60 * i, np.uint8)))
      caps = [f"image {i} caption {k}" for k in range(5)]
      f.write(json.dumps({"image": f"{i}.png", "caption": caps}) + "\n")
  out = str(tmp_path / "flickr")
  build.main(
    ["--images", str(images), "--captions", str(tmp_path / "captions.jsonl"), "--output", out,
     "--split", "test"]
  )  # fmt: skip
  tasks, skipped = suite.suite_tasks("flickr30k", paths={"flickr30k": out})
  assert not skipped and tasks["flickr30k"]["source"] == dict(
    name="arrayrecord", path=out, split="test"
  )
  metrics = runner.run_tasks(mock.embed_fn, tasks, prepare=mock.prepare, batch_size=8)
  rows = suite.table_rows("flickr30k", tasks, metrics, skipped)
  assert [(r["metric"], r["status"], r["examples"]) for r in rows[:2]] == [
    ("image_to_text/recall@5", "ran", 4),
    ("text_to_image/recall@5", "ran", 4),
  ]
  # Every caption finds its image among the 4 within 5: text-to-image R@5 is 1 whatever the model.
  assert metrics["flickr30k/text_to_image/recall@5"] == 1.0
  assert 0.0 <= metrics["flickr30k/image_to_text/recall@5"] <= 1.0
  from contrastive.evaluate import sources

  records = sources.make_source(tasks["flickr30k"]["source"]).source
  assert [len(records[i]["caption"]) for i in range(len(records))] == [5] * 4


def test_the_progress_source_passes_records_through():
  source = suite._Progress(list(range(5)), "five")
  assert len(source) == 5 and [source[i] for i in range(5)] == [0, 1, 2, 3, 4]
  assert source._bar is not None  # a bar per dataset (drawn only on a terminal)
  made = suite.progress_sources()["arrayrecord"]
  assert callable(made) and set(suite.progress_sources()) == {"tfds", "arrayrecord"}
