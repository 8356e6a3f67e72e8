"""Phantom datasets in Medical Segmentation Decathlon layout, and the command that writes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sitetune.imaging.load import load_volume
from sitetune.imaging.phantoms import dataset as dataset_module
from sitetune.imaging.phantoms.__main__ import main
from sitetune.imaging.phantoms.dataset import DatasetSpec, write_msd_dataset


def test_cardiac_4d_dataset_with_ed_es_labels_only(tmp_path):
    spec = DatasetSpec("lv-ct", "A", cases=2, phases=5, label_phases="ed_es", seed=4)
    out = write_msd_dataset(spec, tmp_path / "ds", workers=2)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "LV blood pool", "2": "LV myocardium"}
    assert meta["numTraining"] == 2 and meta["tensorImageSize"] == "4D"
    assert meta["sitetune"]["site_profile"]["site"] == "A"
    for entry, truth in zip(meta["training"], meta["sitetune"]["cases"], strict=True):
        image = load_volume(out / entry["image"])
        labels = load_volume(out / entry["label"])
        assert image.array.shape == labels.array.shape and image.n_phases == 5
        np.testing.assert_allclose(image.affine, labels.affine, atol=1e-5)
        labelled = [t for t in range(5) if labels.array[..., t].any()]
        assert labelled == [truth["ed_phase"], truth["es_phase"]] == [0, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no partial folder left


def test_dicom_format_images_share_the_label_grid(tmp_path):
    spec = DatasetSpec("flair-lesion", "B", cases=1, image_format="dicom", seed=1)
    out = write_msd_dataset(spec, tmp_path / "ds", workers=1)
    entry = json.loads((out / "dataset.json").read_text())["training"][0]
    image = load_volume(out / entry["image"])
    labels = load_volume(out / entry["label"])
    assert image.modality == "MR" and image.shape == labels.shape
    assert np.abs(image.world_coordinates() - labels.world_coordinates()).max() < 1e-3


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = dataset_module.write_case
    calls = []

    def failing(spec, index, folder):
        calls.append(index)
        if index == 1:
            raise KeyboardInterrupt
        return real(spec, index, folder)

    monkeypatch.setattr(dataset_module, "write_case", failing)
    spec = DatasetSpec("lv-ct", "A", cases=3, seed=0)
    with pytest.raises(KeyboardInterrupt):
        write_msd_dataset(spec, tmp_path / "ds", workers=1)
    assert calls == [0, 1] and list(tmp_path.iterdir()) == []


def test_command_line_validates_and_refuses_to_overwrite(tmp_path, capsys):
    assert (
        main(["--family", "lv-ct", "--site", "Z", "--cases", "1", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "unknown site 'Z'" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert (
        main(
            ["--family", "lv-ct", "--site", "A", "--cases", "1", "--out", str(tmp_path / "exists")]
        )
        == 2
    )
    assert (
        main(
            [
                "--family",
                "flair-lesion",
                "--site",
                "A",
                "--cases",
                "1",
                "--phases",
                "3",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )


def test_command_line_writes_a_dataset(tmp_path, capsys):
    assert (
        main(
            [
                "--family",
                "lv-ct",
                "--site",
                "B",
                "--cases",
                "2",
                "--workers",
                "1",
                "--out",
                str(tmp_path / "ds"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 2 and summary["site"] == "B"
    assert len(list((tmp_path / "ds" / "imagesTr").iterdir())) == 2
