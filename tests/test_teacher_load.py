"""teacher.pt is read safely (docs/formats.md): weights_only, validated, every defect a one-line AuditInputError."""

import pickle

import pytest
import torch

from auditor.errors import AuditInputError
from auditor.sources.teachers.files import load_teacher
from auditor.teachers.pca_gmm import TEACHER_FORMAT, teacher_from_dict

from .test_teacher_fit import assert_usage_error


def valid_dict(D=6, r=3, K=4):
    g = torch.Generator().manual_seed(0)
    return {
        "format": TEACHER_FORMAT,
        "kind": "pca-gmm",
        "pca_mean": torch.rand(D, generator=g, dtype=torch.float64),
        "pca_components": torch.rand(r, D, generator=g, dtype=torch.float64),
        "log_weights": torch.log(torch.full((K,), 1.0 / K, dtype=torch.float64)),
        "means": torch.rand(K, r, generator=g, dtype=torch.float64),
        "variances": torch.rand(K, r, generator=g, dtype=torch.float64) + 0.1,
        "temperature": 1.5,
    }


def save(obj, path):
    torch.save(obj, path)
    return path


class CreatesMarker:
    """Unpickling this object opens (so creates) the marker file: code running at load time."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_valid_dict_loads(tmp_path):
    teacher = load_teacher(save(valid_dict(), tmp_path / "t.pt"))
    assert (teacher.num_classes, teacher.input_dim, teacher.temperature) == (4, 6, 1.5)
    p = teacher(torch.rand(5, 6, dtype=torch.float64))
    assert torch.allclose(p.sum(1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("wrap", [lambda bomb: bomb, lambda bomb: {**valid_dict(), "extra": bomb}])
def test_pickled_objects_are_refused_and_never_run(tmp_path, wrap):
    marker = tmp_path / "marker"
    path = save(wrap(CreatesMarker(marker)), tmp_path / "evil.pt")
    # The payload is live: an unrestricted load would run it.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(AuditInputError, match="refused to load") as info:
        load_teacher(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(CreatesMarker(marker)))
    with pytest.raises(AuditInputError):
        load_teacher(path)
    assert not marker.exists()


def test_command_refuses_a_pickle_with_exit_2(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = save({**valid_dict(D=64), "extra": CreatesMarker(marker)}, tmp_path / "evil.pt")
    assert_usage_error(
        ["design", "--teacher", str(path), "--data", "digits", "--beta", "2", "--latent-dim", "8"],
        capsys,
        "refused to load",
    )
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file(tmp_path, keep):
    data = save(valid_dict(), tmp_path / "t.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AuditInputError, match="not a readable torch file|truncated"):
        load_teacher(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "t.pt"
    path.write_bytes(b"this is not a torch file at all")
    with pytest.raises(AuditInputError):
        load_teacher(path)


@pytest.mark.parametrize("obj", [[torch.zeros(3)], torch.zeros(3), "teacher", 3])
def test_non_dict(tmp_path, obj):
    with pytest.raises(AuditInputError, match="must hold a dict"):
        load_teacher(save(obj, tmp_path / "t.pt"))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"format": "vae-audit-teacher/2"}, "not a vae-audit teacher"),
        ({"format": None}, "not a vae-audit teacher"),
        ({"kind": "kmeans"}, "unknown teacher kind"),
        ({"means": torch.zeros(4, 5, dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"variances": torch.ones(3, 3, dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"pca_components": torch.zeros(3, 7, dtype=torch.float64)}, "inconsistent teacher shapes"),
        (
            {
                "log_weights": torch.zeros(1, dtype=torch.float64),
                "means": torch.zeros(1, 3, dtype=torch.float64),
                "variances": torch.ones(1, 3, dtype=torch.float64),
            },
            "K >= 2",
        ),
        ({"pca_mean": torch.zeros(2, 3, dtype=torch.float64)}, "inconsistent teacher shapes"),
        ({"variances": torch.zeros(4, 3, dtype=torch.float64)}, "variances must be > 0"),
        ({"variances": -torch.ones(4, 3, dtype=torch.float64)}, "variances must be > 0"),
        ({"means": torch.full((4, 3), float("nan"), dtype=torch.float64)}, "NaN or inf"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"temperature": torch.tensor([1.0, 2.0])}, "temperature"),
        ({"means": [[0.0] * 3] * 4}, "must be a tensor"),
    ],
)
def test_malformed_dict(tmp_path, change, match):
    obj = {**valid_dict(), **change}
    with pytest.raises(AuditInputError, match=match) as info:
        load_teacher(save(obj, tmp_path / "t.pt"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("missing", ["pca_mean", "variances", "temperature"])
def test_missing_field(missing):
    obj = valid_dict()
    del obj[missing]
    with pytest.raises(AuditInputError, match=f"missing {missing}"):
        teacher_from_dict(obj)


def test_missing_file(tmp_path):
    with pytest.raises(AuditInputError, match="no such teacher file"):
        load_teacher(tmp_path / "absent.pt")


@pytest.mark.parametrize("legacy", [False, True])
def test_corrupted_bytes_never_escape_as_other_errors(tmp_path, legacy):
    """Random byte flips and cuts of a valid file: a valid teacher or an AuditInputError, nothing else."""
    import io
    import random

    buffer = io.BytesIO()
    torch.save(valid_dict(), buffer, _use_new_zipfile_serialization=not legacy)
    good = buffer.getvalue()
    rng = random.Random(0)
    path = tmp_path / "t.pt"
    for trial in range(150):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]
        elif trial % 3 == 1:
            for _ in range(4):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        path.write_bytes(bytes(data))
        try:
            load_teacher(path)
        except AuditInputError as exc:
            assert "\n" not in str(exc)
