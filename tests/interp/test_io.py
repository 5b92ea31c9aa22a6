"""The one atomic writer: round trips, a failed write leaves the old file, checked JSON reads."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from interp.store.io import FileReadError, read_json, write_json, write_parquet, write_safetensors, write_tables


def test_json_round_trip_keeps_or_sorts_key_order(tmp_path):
    payload = {"b": 1, "a": [1, 2]}
    assert read_json(write_json(tmp_path / "x" / "s.json", payload)) == payload  # parent folder created
    assert list(json.loads((tmp_path / "x" / "s.json").read_text())) == ["a", "b"]
    write_json(tmp_path / "o.json", payload, sort_keys=False, durable=True)
    assert list(read_json(tmp_path / "o.json")) == ["b", "a"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = write_json(tmp_path / "m.json", {"v": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"v": 2})
    monkeypatch.undo()
    assert read_json(path) == {"v": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_parquet_rows_sorted_by_feature_only_when_asked(tmp_path):
    frame = pd.DataFrame({"feature": [2, 0, 1], "value": [20.0, 0.0, 10.0]})
    assert write_parquet(frame, tmp_path / "a.parquet").exists()
    assert pd.read_parquet(tmp_path / "a.parquet").feature.tolist() == [0, 1, 2]
    write_tables({"b": frame}, tmp_path, by_feature=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b.parquet"), frame)


def test_safetensors_round_trip_through_the_peer_loader(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"k": "v"})
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_read_json_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(FileReadError, match="meta .*missing"):
        read_json(tmp_path / "meta.json", "meta")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FileReadError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
