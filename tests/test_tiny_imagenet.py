"""Tiny-ImageNet-200's own folder layout, written small in the exact layout: order, labels, pixels
(against Pillow's decoding of each file), lazy decoding, and every malformed folder refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.errors import AuditInputError
from auditor.sources.datasets import tiny_imagenet
from auditor.sources.datasets.registry import open_dataset

from .cli_run import run
from .data_fixtures import write_tiny_imagenet


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "tiny-imagenet-200"
    return root, write_tiny_imagenet(root, np.random.default_rng(0))


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def test_splits_read_in_the_documented_order_with_labels_of_the_sorted_wnids(folder):
    root, written = folder
    for split in ("train", "test"):
        dataset = open_dataset(str(root), split)
        expected = written[split]
        assert dataset.shape == (len(expected), 3, 64, 64) and dataset.dtype == np.uint8
        assert dataset.labels().tolist() == [label for _, label in expected]
        images = dataset.read(0, dataset.num_samples)
        for image, (path, _) in zip(images, expected):
            assert np.array_equal(image, decoded(path))
        inputs = [r.path for r in dataset.inputs]
        assert inputs[0] == str(root / "wnids.txt") and inputs[-len(expected) :] == [str(p) for p, _ in expected]
    # train: classes by sorted wnid (n01, n02, n03) although wnids.txt lists n02 first
    assert [p.parent.parent.name for p, _ in written["train"]][::4] == ["n01", "n02", "n03"]
    everything = open_dataset(str(root), "all")
    assert everything.num_samples == 12 + 5
    assert everything.labels().tolist() == [label for _, label in written["train"] + written["test"]]
    assert [r.path for r in everything.inputs].count(str(root / "wnids.txt")) == 1
    # A parent folder holding the data set is recognised too (as for CIFAR and MNIST).
    assert open_dataset(str(root.parent), "test").num_samples == 5


def test_grayscale_images_become_three_equal_planes(folder):
    root, written = folder
    path, _ = written["test"][2]
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 251, "L").save(path, "JPEG")
    image = open_dataset(str(root), "test").read(2, 3)[0]
    assert np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2])
    assert np.array_equal(image, decoded(path))


def test_images_are_decoded_only_when_their_rows_are_read(folder):
    root, written = folder
    written["train"][7][0].write_bytes(b"not a jpeg at all")
    dataset = open_dataset(str(root), "train")  # opening reads no image
    assert dataset.read(0, 7).shape == (7, 3, 64, 64) and dataset.read(8, 12).shape == (4, 3, 64, 64)
    with pytest.raises(AuditInputError, match="cannot be decoded"):
        dataset.read(6, 9)


def _fit(root: Path, tmp_path: Path, capsys, split: str = "train"):
    out = tmp_path / "teacher.pt"
    args = ["teacher", "fit", "--data", root, "--split", split, "--rank", "2", "--num-classes", "2", "--out", out]
    code, _, err = run(args, capsys)
    return code, err, out


def test_a_good_folder_feeds_the_commands(folder, tmp_path, capsys):
    code, err, out = _fit(folder[0], tmp_path, capsys)
    assert code == 0, err
    assert out.is_file()


def _replace_line(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def test_every_malformed_folder_is_refused_with_one_line(tmp_path, capsys, monkeypatch):
    def gif_named_jpeg(root, written):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(written["train"][0][0], "GIF")

    def truncated(root, written):
        path = written["train"][1][0]
        path.write_bytes(path.read_bytes()[:300])

    def small_image(root, written):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(written["train"][2][0], "JPEG")

    def first_val_line(root):
        return (root / "val" / "val_annotations.txt").read_text().splitlines()[0]

    cases = {
        "no annotations": (
            lambda r, w: (r / "val" / "val_annotations.txt").unlink(),
            "missing val/val_annotations.txt",
        ),
        "path in wnids": (lambda r, w: _replace_line(r / "wnids.txt", "n03", "../n03"), "is not a plain name"),
        "repeated wnid": (lambda r, w: _replace_line(r / "wnids.txt", "n03", "n01"), "more than once"),
        "binary wnids": (lambda r, w: (r / "wnids.txt").write_bytes(b"\xff\xfe\x00"), "not a text file"),
        "empty wnids": (lambda r, w: (r / "wnids.txt").write_text("\n"), "lists no classes"),
        "unlisted class folder": (
            lambda r, w: (r / "train" / "n09" / "images").mkdir(parents=True),
            "does not list (n09)",
        ),
        "missing class folder": (
            lambda r, w: _replace_line(r / "wnids.txt", "n03", "n03\nn04"),
            "wnids.txt lists class n04",
        ),
        "gif named .JPEG": (gif_named_jpeg, "cannot be decoded (not a PNG or JPEG image)"),
        "truncated jpeg": (truncated, "cannot be decoded"),
        "32x32 image": (small_image, "image is 32x32 (HxW), expected 64x64"),
    }
    val_cases = {
        "unknown class": (
            lambda r, w: _replace_line(r / "val" / "val_annotations.txt", "\tn0", "\tm0"),
            "which wnids.txt does not list",
        ),
        "path in file name": (
            lambda r, w: _replace_line(r / "val" / "val_annotations.txt", "val_", "../val_"),
            "is not a plain name",
        ),
        "one field": (
            lambda r, w: _replace_line(
                r / "val" / "val_annotations.txt", first_val_line(r), first_val_line(r).split("\t")[0]
            ),
            "is not '<file name> TAB <class id>",
        ),
        "listed twice": (
            lambda r, w: (r / "val" / "val_annotations.txt").write_text(
                (r / "val" / "val_annotations.txt").read_text() + first_val_line(r) + "\n"
            ),
            "is listed more than once",
        ),
        "listed, not there": (lambda r, w: w["test"][0][0].unlink(), "is listed in val_annotations.txt but not there"),
        "there, not listed": (
            lambda r, w: Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(r / "val" / "images" / "extra.JPEG"),
            "extra.JPEG has no line in val_annotations.txt",
        ),
    }
    for split, table in (("train", cases), ("test", val_cases)):
        for name, (damage, message) in table.items():
            root = tmp_path / name.replace(" ", "-") / "tiny-imagenet-200"
            damage(root, write_tiny_imagenet(root, np.random.default_rng(1)))
            code, err, out = _fit(root, tmp_path / name.replace(" ", "-"), capsys, split)
            assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)
            assert not out.exists(), name
    monkeypatch.setattr(tiny_imagenet, "MAX_INDEX_BYTES", 10)
    code, err, _ = _fit(tmp_path / "unlisted-class-folder" / "tiny-imagenet-200", tmp_path, capsys)
    assert code == 2 and "more than the 10-byte limit for a Tiny-ImageNet index file" in err


def test_without_pillow_the_error_says_how_to_install_it(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now raises ImportError
    dataset = open_dataset(str(folder[0]), "test")
    with pytest.raises(AuditInputError, match=r"pip install 'vae-audit\[images\]'"):
        dataset.read(0, 1)
