"""Image folders (PNG/JPEG, classes as labels): layout, order, decoding, sizes, the split, hashing
and verify, and every refusal — on folders written here with Pillow."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from auditor.errors import AuditInputError
from auditor.sources.datasets.images import read_header
from auditor.sources.datasets.options import DataOptions
from auditor.sources.datasets.registry import open_dataset
from auditor.sources.hashing import resolve_digest

from .cli_run import run
from .foreign_data_fixtures import (
    assert_numbers,
    certify,
    encoded,
    gray_images,
    png_header_only,
    rule_test_rows,
    rule_train_rows,
    write_image_folder,
)


def message(call, *args, **kwargs) -> str:
    with pytest.raises(AuditInputError) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def sha256sum_manifest(root, relative_paths) -> str:
    """The documented manifest: what GNU ``sha256sum`` prints for the files in this order, hashed
    (written out here for plain names where the tool is missing)."""
    if shutil.which("sha256sum"):
        printed = subprocess.run(["sha256sum", "--", *relative_paths], cwd=root, capture_output=True, check=True).stdout
    else:
        printed = "".join(
            f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}\n" for p in relative_paths
        ).encode()
    return hashlib.sha256(printed).hexdigest()


@pytest.fixture
def animals(tmp_path):
    """dog (3), cat (2), ant (1) in files whose names sort differently from their numbers, plus
    entries that are not images of the data set."""
    images = gray_images(6, seed=3)
    names = {"dog": ["b.png", "a.PNG", "10.png"], "cat": ["9.png", "10.png"], "ant": ["x.png"]}
    pixels = {}
    for k, (label, files) in enumerate(names.items()):
        (tmp_path / label).mkdir()
        for j, name in enumerate(files):
            pixels[f"{label}/{name}"] = images[2 * k + j] if k < 2 else images[5]
            (tmp_path / label / name).write_bytes(encoded(pixels[f"{label}/{name}"]))
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "cat" / "._9.png").write_bytes(b"apple double")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    order = ["ant/x.png", "cat/10.png", "cat/9.png", "dog/10.png", "dog/a.PNG", "dog/b.png"]
    return tmp_path, order, np.stack([pixels[p] for p in order])[:, None]


def test_classes_sorted_files_sorted_labels_and_exact_pixels(animals):
    root, order, expected = animals
    data = open_dataset(str(root))
    assert data.shape == (6, 1, 8, 8) and data.dtype == np.uint8
    assert data.labels().tolist() == [0, 1, 1, 2, 2, 2]  # ant, cat, dog
    assert np.array_equal(data.read(0, 6), expected)  # PNG decodes exactly
    for step in (1, 4):
        assert np.array_equal(np.concatenate([data.read(i, i + step) for i in range(0, 6, step)]), expected)


def test_manifest_is_sha256sum_of_the_images_in_reading_order(animals):
    root, order, _ = animals
    (record,) = open_dataset(str(root), role="teacher-data").inputs
    assert (record.role, record.path) == ("teacher-data", str(root))
    assert resolve_digest(record.sha256) == sha256sum_manifest(root, order)


@pytest.mark.skipif(shutil.which("sha256sum") is None or os.name != "posix", reason="needs GNU sha256sum")
def test_manifest_of_names_that_could_pass_for_several_lines(tmp_path):
    images = gray_images(3, seed=13)
    names = ["a\nb.png", "c\\d.png", "e\r.png"]
    (tmp_path / "k").mkdir()
    for name, pixels in zip(names, images):
        (tmp_path / "k" / name).write_bytes(encoded(pixels))
    (record,) = open_dataset(str(tmp_path)).inputs
    assert resolve_digest(record.sha256) == sha256sum_manifest(tmp_path, [f"k/{name}" for name in sorted(names)])


def test_split_rule_over_the_documented_order(animals):
    root, _, expected = animals
    test, train = open_dataset(str(root), "test"), open_dataset(str(root), "train")
    assert np.array_equal(test.read(0, 9), expected[rule_test_rows(6)])
    assert np.array_equal(train.read(0, 9), expected[rule_train_rows(6)])
    assert test.labels().tolist() == [0, 2] and train.labels().tolist() == [1, 1, 2, 2]
    every_3 = open_dataset(str(root), "test", options=DataOptions(test_every=3))
    assert np.array_equal(every_3.read(0, 9), expected[rule_test_rows(6, every=3)])
    assert open_dataset(str(root), "train", limit=3).num_samples == 3
    assert test.split_rule == "row i of the data set is test when i % 5 == 0, train otherwise"


def test_train_and_test_folders_are_the_split_with_labels_over_both(tmp_path):
    train, test = gray_images(3, seed=1), gray_images(2, seed=2)
    write_image_folder(tmp_path / "train", {"a": train[:1], "c": train[1:]})
    write_image_folder(tmp_path / "test", {"b": test[:1], "c": test[1:]})
    write_image_folder(tmp_path / "val", {"z": test})  # not read
    got = {split: open_dataset(str(tmp_path), split) for split in ("train", "test", "all")}
    assert np.array_equal(got["train"].read(0, 9)[:, 0], train) and got["train"].labels().tolist() == [0, 2, 2]
    assert np.array_equal(got["test"].read(0, 9)[:, 0], test) and got["test"].labels().tolist() == [1, 2]
    assert np.array_equal(got["all"].read(0, 9)[:, 0], np.concatenate([train, test]))
    assert got["test"].split_rule is None
    (record,) = got["test"].inputs
    listing = ["train/a/000.png", "train/c/000.png", "train/c/001.png", "test/b/000.png", "test/c/000.png"]
    assert resolve_digest(record.sha256) == sha256sum_manifest(tmp_path, listing)
    assert "own train/test split" in message(open_dataset, str(tmp_path), "test", options=DataOptions(test_every=3))


def test_colour_when_any_image_is_colour_else_grayscale(tmp_path):
    gray = gray_images(2, seed=4)
    rgba = np.random.default_rng(5).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    write_image_folder(tmp_path / "gray", {"g": gray})
    assert open_dataset(str(tmp_path / "gray")).sample_shape == (1, 8, 8)
    write_image_folder(tmp_path / "mixed", {"g": gray, "rgba": rgba[None]})
    data = open_dataset(str(tmp_path / "mixed"))
    assert data.sample_shape == (3, 8, 8)
    rows = data.read(0, 3)
    assert np.array_equal(rows[:2], np.repeat(gray[:, None], 3, axis=1))  # grayscale copied to R, G, B
    assert np.array_equal(rows[2], rgba[..., :3].transpose(2, 0, 1))  # alpha dropped, not composited


def test_jpeg_is_decoded_as_pillow_decodes_it(tmp_path):
    colour = np.random.default_rng(6).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    write_image_folder(tmp_path, {"c": colour}, suffix=".jpg")
    rows = open_dataset(str(tmp_path)).read(0, 2)
    for i in range(2):
        with Image.open(tmp_path / "c" / f"{i:03d}.jpg") as image:
            assert np.array_equal(rows[i], np.asarray(image.convert("RGB")).transpose(2, 0, 1))


def test_sizes_must_agree_unless_image_size_resizes_every_image(tmp_path):
    small, large = gray_images(1, seed=7), np.random.default_rng(8).integers(0, 256, (1, 12, 10), dtype=np.uint8)
    write_image_folder(tmp_path, {"a": small, "b": large})
    assert "give --image-size" in message(open_dataset, str(tmp_path))
    rows = open_dataset(str(tmp_path), options=DataOptions(image_size=(6, 4))).read(0, 2)
    for i, pixels in enumerate((small[0], large[0])):
        expected = np.asarray(Image.fromarray(pixels).resize((4, 6), Image.Resampling.BILINEAR))
        assert np.array_equal(rows[i, 0], expected)


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda root: (root / "a" / "x.png").write_bytes(b"not an image"),
            "x.png: cannot be decoded (not a PNG or JPEG image)",
        ),
        (
            lambda root: (root / "a" / "x.png").write_bytes(encoded(np.zeros((4, 4), np.uint8), "GIF")),
            "not a PNG or JPEG",
        ),
        (lambda root: Image.fromarray(np.zeros((4, 4), np.uint16)).save(root / "a" / "x.png"), "16-bit or float"),
        (lambda root: (root / "a" / "x.png").write_bytes(png_header_only(10_000, 10_000)), "MAX_IMAGE_PIXELS"),
        (lambda root: (root / "a" / "x.png").write_bytes(png_header_only(20_000, 20_000)), "decompression bomb"),
        (lambda root: (root / "a" / "x.png").write_bytes(encoded(np.zeros((8, 9), np.uint8))), "give --image-size"),
        (lambda root: (root / "empty").mkdir(), "class folder"),
        (
            lambda root: (root / "loose.png").write_bytes(encoded(np.zeros((8, 8), np.uint8))),
            "images directly in the folder",
        ),
    ],
    ids=[
        "not an image",
        "GIF named png",
        "16-bit",
        "bomb warned",
        "bomb refused",
        "mixed sizes",
        "empty class",
        "loose",
    ],
)
def test_bad_folders_exit_2_with_one_line_naming_the_file(tmp_path, capsys, make, expected):
    root = write_image_folder(tmp_path / "data", {"a": gray_images(2)})
    make(root)
    code, cert, err = certify(tmp_path, capsys, root)
    assert code == 2 and not cert
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err and "Warning" not in err


def test_an_image_damaged_after_its_header_stops_the_pass_with_exit_2(tmp_path, capsys):
    images = np.random.default_rng(9).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    root = write_image_folder(tmp_path / "data", {"a": images})
    damaged = root / "a" / "010.png"
    damaged.write_bytes(damaged.read_bytes()[:60])  # the header survives, the pixels do not
    assert read_header(damaged, "damaged") == ("L", 8, 8)
    code, cert, err = certify(tmp_path, capsys, root, "--batch-size", "4")
    assert code == 2 and not cert and err.count("\n") == 1
    assert f"{damaged}: cannot be decoded" in err


def test_names_from_the_folder_are_escaped_in_messages(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", {"a": gray_images(1)})
    (root / "b\x1b[2J").mkdir()
    code, _, err = certify(tmp_path, capsys, root)
    assert code == 2 and "\x1b" not in err and "\\x1b[2J" in err


def test_reading_options_that_do_not_apply_are_refused(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", {"a": gray_images(1)})
    code, _, err = certify(tmp_path, capsys, root, "--column", "image")
    assert code == 2 and "--column does not apply" in err and "image folder" in err
    for bad in ("0", "a", "1,2,3", "-4"):
        code, _, err = certify(tmp_path, capsys, root, "--image-size", bad)
        assert code == 2 and "--image-size must be N or H,W" in err, bad


def test_without_pillow_the_error_names_the_extra(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path, {"a": gray_images(1)})
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    assert "pip install 'vae-audit[images]'" in message(open_dataset, str(root))


def test_certify_on_the_test_rows_gives_numpys_numbers_and_verify_follows_the_images(tmp_path, capsys):
    images = gray_images(20, seed=10)
    root = write_image_folder(tmp_path / "data", {"a": images[:9], "b": images[9:]})
    code, cert, err = certify(tmp_path, capsys, root, "--split", "test", "--image-size", "8")
    assert code in (0, 1), err
    assert_numbers(cert, images[rule_test_rows(20)] / 255.0)  # 8×8 images: resizing to 8×8 keeps them
    assert cert["data"]["split_rule"] == "row i of the data set is test when i % 5 == 0, train otherwise"
    certificate = tmp_path / "report" / "certificate.json"
    assert run(["verify", certificate, "--recompute"], capsys)[0] == 0
    (root / "b" / "003.png").write_bytes(encoded(gray_images(1, seed=11)[0]))
    code, out, _ = run(["verify", certificate], capsys)
    assert code == 1 and f"differs  data           {root}" in out


def test_teacher_fit_reads_the_train_rows_of_a_folder(tmp_path, capsys):
    images = gray_images(30, seed=12)
    root = write_image_folder(tmp_path / "data", {"a": images})
    out = tmp_path / "teacher.pt"
    args = [
        "teacher",
        "search",
        "--data",
        root,
        "--ranks",
        "2",
        "--classes",
        "2",
        "--temperatures",
        "1",
        "--energy-budget",
        "1000",
    ]
    code, stdout, err = run([*args, "--out", out], capsys)
    assert code == 0, err
    record = json.loads(out.with_name("teacher.search.json").read_text())["data"]
    assert (record["split"], record["num_fit"] + record["num_holdout"]) == ("train", len(rule_train_rows(30)))
    assert record["split_rule"].startswith("row i of the data set is test when i % 5 == 0")


def test_a_teacher_view_in_the_documented_order_lines_up_row_by_row(animals, tmp_path_factory, capsys):
    root, _, expected = animals
    work = tmp_path_factory.mktemp("work")  # not inside the image folder
    np.save(work / "view.npy", expected)  # the same images, as a tensor file in reading order
    code, cert, err = certify(work, capsys, root, "--teacher-data", work / "view.npy", "--split", "train")
    assert code in (0, 1), err
    assert cert["num_samples"] == 4 and cert["view_gap"]["mean_tv"] == 0.0 and cert["view_gap"]["bound"] == 0.0
    np.save(work / "view.npy", expected[::-1].copy())  # out of order: the views disagree
    code, cert, err = certify(work, capsys, root, "--teacher-data", work / "view.npy", "--split", "train")
    assert code in (0, 1) and cert["view_gap"]["mean_tv"] > 0, err
