"""Writers of small data sets in the exact on-disk formats `auditor.sources.datasets.dataset` reads.

Each writer returns the arrays it wrote, so a test can compare what is read back with what
was written. Images are random uint8 drawn from the given generator.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def random_images(rng: np.random.Generator, count: int, shape=(3, 32, 32)) -> np.ndarray:
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def images_near(rng: np.random.Generator, count: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 images, each near one of ``centres`` (K × sample shape, floats in [0, 1]) with
    noise: data a teacher can find clusters in. Returns (images, the index of each one's centre)."""
    labels = rng.integers(0, len(centres), size=count)
    noisy = centres[labels] + rng.normal(0, 0.1, size=(count, *centres.shape[1:]))
    return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8), labels


def write_cifar10_binary(
    folder: Path, rng: np.random.Generator, train_counts=(3, 2, 4, 1, 2), test_count: int = 5
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """data_batch_{1..5}.bin and test_batch.bin: records of 1 label byte + 3072 image bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{name}.bin" for name in CIFAR10_TRAIN_FILES] + ["test_batch.bin"]
    written = {}
    for name, count in zip(names, (*train_counts, test_count)):
        images = random_images(rng, count)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        records = np.concatenate([labels[:, None], images.reshape(count, 3072)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        written[name] = (images, labels)
    return written


def write_cifar100_binary(
    folder: Path, rng: np.random.Generator, train_count: int = 7, test_count: int = 4, centres: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """train.bin and test.bin: records of coarse label, fine label, 3072 image bytes (random, or
    near ``centres``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, count in (("train.bin", train_count), ("test.bin", test_count)):
        images = random_images(rng, count) if centres is None else images_near(rng, count, centres)[0]
        coarse = rng.integers(0, 20, size=count, dtype=np.uint8)
        fine = rng.integers(20, 100, size=count, dtype=np.uint8)  # disjoint from coarse on purpose
        records = np.concatenate([coarse[:, None], fine[:, None], images.reshape(count, 3072)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        written[name] = (images, coarse, fine)
    return written


def write_cifar10_python(
    folder: Path,
    rng: np.random.Generator,
    train_counts=(2, 3, 1, 2, 2),
    test_count: int = 3,
    protocol: int = pickle.DEFAULT_PROTOCOL,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pickled dicts with bytes keys, as the CIFAR-10 python version holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, count in zip((*CIFAR10_TRAIN_FILES, "test_batch"), (*train_counts, test_count)):
        images = random_images(rng, count)
        labels = rng.integers(0, 10, size=count)
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": [int(label) for label in labels],
            b"data": images.reshape(count, 3072),
            b"filenames": [f"img_{i}.png".encode() for i in range(count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
        written[name] = (images, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat"] * 10}))
    return written


def write_cifar100_python(
    folder: Path, rng: np.random.Generator, train_count: int = 6, test_count: int = 3
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, count in (("train", train_count), ("test", test_count)):
        images = random_images(rng, count)
        fine = rng.integers(0, 100, size=count)
        batch = {
            b"filenames": [b"x.png"] * count,
            b"batch_label": name.encode(),
            b"fine_labels": [int(label) for label in fine],
            b"coarse_labels": [int(label) % 20 for label in fine],
            b"data": images.reshape(count, 3072),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
        written[name] = (images, fine)
    return written


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x00000800 + ndim, big-endian sizes, the data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(
    folder: Path,
    rng: np.random.Generator,
    train_count: int = 6,
    test_count: int = 4,
    rows: int = 28,
    cols: int = 28,
    gzipped: bool = False,
    dotted: bool = False,
    centres: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four MNIST IDX files (random images, or near ``centres`` of shape K × rows × cols);
    returns {"train": (images, labels), "test": (...)}."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    written = {}
    for split, prefix, count in (("train", "train", train_count), ("test", "t10k", test_count)):
        if centres is None:
            images = rng.integers(0, 256, size=(count, rows, cols), dtype=np.uint8)
        else:
            images = images_near(rng, count, centres)[0]
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        sep = "." if dotted else "-"
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{suffix}", labels)
        written[split] = (images, labels)
    return written


def write_tiny_imagenet(
    folder: Path,
    rng: np.random.Generator,
    wnids=("n02", "n01", "n03"),
    train_per_class: int = 4,
    val_count: int = 5,
    centres: np.ndarray | None = None,
) -> dict[str, list[tuple[Path, int]]]:
    """Tiny-ImageNet-200's layout with small 64×64 JPEGs: wnids.txt (in the order given, not
    sorted), train/<wnid>/images/<wnid>_<i>.JPEG with a boxes file beside, val/images/val_<i>.JPEG
    with val/val_annotations.txt (in shuffled line order), and an unlabelled test/images/.

    Images are noise, or noise around ``centres[label]`` (C×H×W floats in [0, 1]) when given.
    Returns {"train": [(path, label)], "test": [(path, label)]} in the documented read order
    (classes by sorted wnid, files by sorted name), labels indexing the sorted wnids."""
    from PIL import Image

    def image(label: int) -> Image.Image:
        if centres is None:
            pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        else:
            noisy = centres[label].transpose(1, 2, 0) + rng.normal(0, 0.1, size=(64, 64, 3))
            pixels = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    label_of = {wnid: label for label, wnid in enumerate(sorted(wnids))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    written: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for wnid in sorted(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(train_per_class):
            path = images / f"{wnid}_{i}.JPEG"
            image(label_of[wnid]).save(path, "JPEG", quality=95)
            written["train"].append((path, label_of[wnid]))
    written["train"].sort(key=lambda item: (sorted(wnids).index(item[0].parent.parent.name), item[0].name))
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(val_count):
        wnid = wnids[int(rng.integers(0, len(wnids)))]
        path = folder / "val" / "images" / f"val_{i}.JPEG"
        image(label_of[wnid]).save(path, "JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
        written["test"].append((path, label_of[wnid]))
    written["test"].sort(key=lambda item: item[0].name)
    (folder / "val" / "val_annotations.txt").write_text("".join(rng.permutation(lines)))
    (folder / "test" / "images").mkdir(parents=True)
    image(0).save(folder / "test" / "images" / "test_0.JPEG", "JPEG")
    return written
