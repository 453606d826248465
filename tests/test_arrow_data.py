"""Parquet files, Arrow IPC files and ``datasets.save_to_disk`` folders: columns, labels, order,
streaming, the split, memory flat in N, and every refusal — on files written here with pyarrow and
with the real ``datasets`` library."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from auditor.errors import AuditInputError
from auditor.sources.datasets.options import DataOptions
from auditor.sources.datasets.registry import open_dataset

from .foreign_data_fixtures import (
    assert_numbers,
    certify,
    encoded,
    gray_images,
    rule_test_rows,
    rule_train_rows,
)

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # how datasets stores an Image


def message(call, *args, **kwargs) -> str:
    with pytest.raises(AuditInputError) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def image_cells(images: np.ndarray) -> pa.Array:
    return pa.array([{"bytes": encoded(pixels), "path": None} for pixels in images], IMAGE_TYPE)


def fixed_rows(x: np.ndarray) -> pa.Array:
    """(N, D) numbers as a fixed_size_list<D> column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def every_read(data, step: int) -> np.ndarray:
    return np.concatenate([data.read(i, i + step) for i in range(0, data.num_samples, step)])


@pytest.fixture(scope="module")
def table_rows():
    rng = np.random.default_rng(20)
    return {
        "images": gray_images(23, seed=21),
        "x": rng.random((23, 64), dtype=np.float32),
        "label": (np.arange(23) * 7) % 4,
    }


@pytest.fixture(scope="module")
def parquet(tmp_path_factory, table_rows):
    """A Parquet file in row groups of 4: an id, a variable list, an image column, arrays, labels."""
    path = tmp_path_factory.mktemp("parquet") / "data.parquet"
    x = table_rows["x"]
    table = pa.table(
        {
            "id": pa.array(np.arange(23)),
            "v": pa.array(x[:, :3].tolist(), pa.list_(pa.float32())),
            "image": image_cells(table_rows["images"]),
            "x": fixed_rows(x),
            "label": pa.array(table_rows["label"]),
        }
    )
    pq.write_table(table, path, row_group_size=4)
    return path


def test_parquet_image_column_is_the_default_and_decodes_exactly(parquet, table_rows):
    data = open_dataset(str(parquet))
    assert data.shape == (23, 1, 8, 8) and data.dtype == np.uint8
    expected = table_rows["images"][:, None]
    for step in (1, 3, 5, 23, 512):
        assert np.array_equal(every_read(data, step), expected), step
    assert np.array_equal(data.read(17, 20), expected[17:20])
    assert np.array_equal(data.read(2, 5), expected[2:5])  # backwards: starts again from row group 0
    assert data.labels().tolist() == table_rows["label"].tolist()


def test_parquet_array_and_list_columns_by_name(parquet, table_rows):
    x = open_dataset(str(parquet), options=DataOptions(column="x"))
    assert x.dtype == np.float32 and np.array_equal(every_read(x, 6), table_rows["x"])
    v = open_dataset(str(parquet), options=DataOptions(column="v"))
    assert np.array_equal(v.read(0, 23), table_rows["x"][:, :3])
    by_name = open_dataset(str(parquet), options=DataOptions(column="x", label_column="id"))
    assert by_name.labels().tolist() == list(range(23))


def test_parquet_split_rule_and_limit(parquet, table_rows):
    test = open_dataset(str(parquet), "test", options=DataOptions(column="x"))
    train = open_dataset(str(parquet), "train", limit=10, options=DataOptions(column="x", test_every=4))
    assert np.array_equal(test.read(0, 99), table_rows["x"][rule_test_rows(23)])
    assert test.labels().tolist() == table_rows["label"][rule_test_rows(23)].tolist()
    assert np.array_equal(train.read(0, 99), table_rows["x"][rule_train_rows(23, every=4)][:10])
    picked = open_dataset(str(parquet), "test")  # images: only the test rows are decoded
    assert np.array_equal(picked.read(0, 99)[:, 0], table_rows["images"][rule_test_rows(23)])


def test_arrow_ipc_file_and_stream_formats(tmp_path, capsys, table_rows):
    table = pa.table({"x": fixed_rows(table_rows["x"]), "labels": pa.array(table_rows["label"], pa.int32())})
    for name, writer in (("file.arrow", pa.ipc.new_file), ("stream.arrow", pa.ipc.new_stream)):
        with pa.OSFile(str(tmp_path / name), "wb") as sink, writer(sink, table.schema) as out:
            out.write_table(table, max_chunksize=5)
        data = open_dataset(str(tmp_path / name), "train")
        assert np.array_equal(every_read(data, 4), table_rows["x"][rule_train_rows(23)]), name
        assert data.labels().tolist() == table_rows["label"][rule_train_rows(23)].tolist()
    code, cert, err = certify(tmp_path, capsys, tmp_path / "stream.arrow", "--split", "train", "--batch-size", "4")
    assert code in (0, 1), err
    assert_numbers(cert, table_rows["x"][rule_train_rows(23)])


def test_fixed_shape_tensor_column(tmp_path, table_rows):
    tensor = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), (1, 8, 8)), fixed_rows(table_rows["x"]))
    pq.write_table(pa.table({"t": tensor}), tmp_path / "t.parquet", row_group_size=10)
    data = open_dataset(str(tmp_path / "t.parquet"))
    assert np.array_equal(every_read(data, 7), table_rows["x"].reshape(23, 1, 8, 8))


@pytest.fixture(scope="module")
def hf_dataset(table_rows):
    """Written by the real `datasets`: Image, ClassLabel and Array3D features."""
    features = datasets.Features(
        {
            "label": datasets.ClassLabel(names=["a", "b", "c", "d"]),
            "img": datasets.Image(),
            "arr": datasets.Array3D(shape=(1, 8, 8), dtype="float32"),
        }
    )
    columns = {
        "label": table_rows["label"].tolist(),
        "img": [Image.fromarray(pixels) for pixels in table_rows["images"]],
        "arr": table_rows["x"].reshape(23, 1, 8, 8),
    }
    return datasets.Dataset.from_dict(columns, features=features)


def test_parquet_written_by_datasets(tmp_path, hf_dataset, table_rows):
    hf_dataset.to_parquet(tmp_path / "hf.parquet", batch_size=6)
    data = open_dataset(str(tmp_path / "hf.parquet"))
    assert np.array_equal(every_read(data, 4)[:, 0], table_rows["images"])  # img: the first image column
    assert data.labels().tolist() == table_rows["label"].tolist()  # the ClassLabel column
    arr = open_dataset(str(tmp_path / "hf.parquet"), options=DataOptions(column="arr"))
    assert np.array_equal(every_read(arr, 5), table_rows["x"].reshape(23, 1, 8, 8))


def test_save_to_disk_read_with_pyarrow_alone(tmp_path, hf_dataset, table_rows):
    hf_dataset.save_to_disk(tmp_path / "single", max_shard_size="2KB")
    assert len(json.loads((tmp_path / "single" / "state.json").read_text())["_data_files"]) > 2
    datasets.DatasetDict(
        {"train": hf_dataset.select(range(15)), "test": hf_dataset.select(range(15, 23))}
    ).save_to_disk(tmp_path / "dict")
    datasets.DatasetDict({"only": hf_dataset}).save_to_disk(tmp_path / "one")
    np.save(tmp_path / "images.npy", table_rows["images"])
    np.save(tmp_path / "x.npy", table_rows["x"].reshape(23, 1, 8, 8))
    script = f"""
        import sys
        import numpy as np
        from auditor.sources.datasets.options import DataOptions
        from auditor.sources.datasets.registry import open_dataset
        root = {str(tmp_path)!r}
        images, x = np.load(root + "/images.npy"), np.load(root + "/x.npy")
        test = np.arange(23) % 5 == 0
        single = open_dataset(root + "/single", "test")
        assert np.array_equal(np.concatenate([single.read(i, i + 2) for i in range(0, 5, 2)])[:, 0], images[test])
        assert single.labels().tolist() == (np.arange(23) * 7 % 4)[test].tolist()
        arrays = open_dataset(root + "/single", options=DataOptions(column="arr"))
        assert np.array_equal(arrays.read(0, 23), x)
        assert np.array_equal(open_dataset(root + "/dict", "test").read(0, 99)[:, 0], images[15:])
        assert np.array_equal(open_dataset(root + "/dict", "train").read(0, 99)[:, 0], images[:15])
        assert open_dataset(root + "/dict").num_samples == 23
        assert np.array_equal(open_dataset(root + "/one", "train").read(0, 99)[:, 0], images[~test])
        assert "datasets" not in sys.modules, "datasets was imported"
        print("ok")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_save_to_disk_refusals(tmp_path, hf_dataset):
    hf_dataset.save_to_disk(tmp_path / "ok")
    datasets.DatasetDict({"train": hf_dataset, "validation": hf_dataset}).save_to_disk(tmp_path / "no_test")
    assert "without both train and test" in message(open_dataset, str(tmp_path / "no_test"))
    datasets.DatasetDict({"train": hf_dataset, "test": hf_dataset}).save_to_disk(tmp_path / "split")
    assert "own train/test split" in message(open_dataset, str(tmp_path / "split"), options=DataOptions(test_every=3))
    state = json.loads((tmp_path / "ok" / "state.json").read_text())
    for edit, expected in (
        ({"_indices_data_files": [{"filename": "indices.arrow"}]}, "flatten_indices()"),
        ({"_data_files": [{"filename": "../ok/state.json"}]}, "is not a file name in the folder"),
        ({"_data_files": [{"filename": "gone.arrow"}]}, "missing"),
        ({"_data_files": "data.arrow"}, "no '_data_files' list"),
    ):
        (tmp_path / "ok" / "state.json").write_text(json.dumps({**state, **edit}))
        assert expected in message(open_dataset, str(tmp_path / "ok")), expected


def test_dataset_dict_json_is_checked(tmp_path, hf_dataset):
    datasets.DatasetDict({"train": hf_dataset, "test": hf_dataset}).save_to_disk(tmp_path / "d")
    for text, expected in (
        ('{"splits": ["../d/train", "test"]}', "no 'splits' list"),
        ('{"splits": ["train", "gone"]}', "not a saved Dataset folder"),
        ("{not json", "not valid JSON"),
    ):
        (tmp_path / "d" / "dataset_dict.json").write_text(text)
        assert expected in message(open_dataset, str(tmp_path / "d")), expected


def test_label_column_must_be_integers_without_nulls(parquet, tmp_path):
    for name, expected in (("nope", "no label column 'nope'"), ("v", "labels must be integers")):
        assert expected in message(open_dataset, str(parquet), options=DataOptions(label_column=name))
    pq.write_table(
        pa.table({"x": fixed_rows(np.zeros((2, 4), np.float32)), "label": pa.array([1, None])}), tmp_path / "n.parquet"
    )
    assert "missing (null) labels" in message(open_dataset(str(tmp_path / "n.parquet")).labels)
    assert "must name a column" in message(DataOptions, column="")


def test_shards_with_different_columns_are_refused(tmp_path, hf_dataset):
    hf_dataset.save_to_disk(tmp_path / "a")
    hf_dataset.remove_columns("arr").save_to_disk(tmp_path / "b")
    (tmp_path / "b" / "data-00000-of-00001.arrow").rename(tmp_path / "a" / "other.arrow")
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    state["_data_files"].append({"filename": "other.arrow"})
    (tmp_path / "a" / "state.json").write_text(json.dumps(state))
    assert "columns differ" in message(open_dataset, str(tmp_path / "a"))


@pytest.mark.parametrize(
    "table, flags, expected",
    [
        ({"x": fixed_rows(np.zeros((3, 64), np.float32))}, ["--column", "y"], "no column 'y'"),
        ({"x": pa.array(["a", "b", "c"])}, ["--column", "x"], "neither images"),
        ({"n": pa.array([1, 2, 3])}, [], "no image or fixed-shape array column"),
        (
            {"x": pa.array([[0.5] * 64, None, [0.5] * 64], pa.list_(pa.float32(), 64))},
            [],
            "row 1: the sample is missing",
        ),
        (
            {"x": pa.array([[0.5] * 64, [0.5] * 63, [0.5] * 64], pa.list_(pa.float32()))},
            ["--column", "x"],
            "different shapes",
        ),
        ({"image": pa.array([{"bytes": None, "path": "/elsewhere/a.png"}], IMAGE_TYPE)}, [], "only a path"),
        ({"image": pa.array([b"not a png"], pa.binary())}, [], "row 0: cannot be decoded"),
        ({"x": fixed_rows(np.zeros((3, 64), np.float32))}, ["--image-size", "8"], "holds arrays"),
        ({"x": fixed_rows(np.zeros((3, 64), np.float32))}, ["--test-every", "1"], "--test-every must be"),
    ],
    ids=[
        "no such column",
        "strings",
        "no usable column",
        "null sample",
        "ragged",
        "path only",
        "bad image",
        "size",
        "every",
    ],
)
def test_bad_tables_exit_2_with_one_line(tmp_path, capsys, table, flags, expected):
    pq.write_table(pa.table(table), tmp_path / "bad.parquet")
    code, cert, err = certify(tmp_path, capsys, tmp_path / "bad.parquet", *flags)
    assert code == 2 and not cert and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_unreadable_files_and_options_that_do_not_apply(tmp_path, capsys):
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "empty.arrow").write_bytes(b"")
    np.save(tmp_path / "x.npy", np.zeros((3, 64), np.float32))
    for data, flags, expected in (
        ("junk.parquet", [], "not a readable Parquet file"),
        ("empty.arrow", [], "not a readable Arrow IPC file"),
        ("x.npy", ["--column", "x"], "--column does not apply"),
        ("digits", ["--test-every", "3"], "has its own train/test split"),
    ):
        code, _, err = certify(tmp_path, capsys, tmp_path / data if data != "digits" else data, *flags)
        assert code == 2 and expected in err and err.count("\n") == 1, err


def test_without_pyarrow_the_error_names_the_extra(parquet, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert "pip install 'vae-audit[arrow]'" in message(open_dataset, str(parquet))


def test_certify_on_a_parquet_image_column_gives_numpys_numbers(tmp_path, capsys, parquet, table_rows):
    code, cert, err = certify(tmp_path, capsys, parquet, "--split", "test", "--batch-size", "2")
    assert code in (0, 1), err
    assert_numbers(cert, table_rows["images"][rule_test_rows(23)] / 255.0)
    assert {record["path"] for record in cert["inputs"] if record["role"] == "data"} == {str(parquet)}


def test_certify_on_a_saved_array_column_gives_numpys_numbers(tmp_path, capsys, hf_dataset, table_rows):
    hf_dataset.save_to_disk(tmp_path / "saved", max_shard_size="2KB")
    code, cert, err = certify(tmp_path, capsys, tmp_path / "saved", "--column", "arr", "--batch-size", "3")
    assert code in (0, 1), err
    assert_numbers(cert, table_rows["x"])


MEASURE = """
import sys
import pyarrow, pyarrow.compute, pyarrow.ipc, pyarrow.parquet
from auditor.sources.datasets.registry import open_dataset

def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

for path in sys.argv[1:]:  # Parquet first: its memory pool is fresh; mapped pages show whatever came before
    before = resident_mib()
    data = open_dataset(path)
    peak = resident_mib()
    for start in range(0, data.num_samples, 512):
        data.read(start, start + 512)
        peak = max(peak, resident_mib())
    print(peak - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_memory_stays_flat_for_a_ten_times_larger_file(tmp_path):
    # 4 MB and 40 MB of float32 rows. Holding a whole column resident (pyarrow's pre_buffer, or
    # mapped pages never released) adds tens of MiB to the larger file's pass: here 62 and 20 MiB.
    growth = {}
    for rows in (4_000, 40_000):
        table = pa.table({"x": fixed_rows(np.random.default_rng(rows).random((rows, 256), dtype=np.float32))})
        paths = [tmp_path / f"{rows}.parquet", tmp_path / f"{rows}.arrow"]
        pq.write_table(table, paths[0], row_group_size=1000, compression="none", use_dictionary=False)
        with pa.OSFile(str(paths[1]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table, max_chunksize=1000)
        result = subprocess.run([sys.executable, "-c", MEASURE, *map(str, paths)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        growth[rows] = [float(line) for line in result.stdout.split()]
    for small, large in zip(growth[4_000], growth[40_000]):
        assert large - small < 12, growth
