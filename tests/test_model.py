"""The window model and its fully convolutional detection twin share weights and agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anprd.model import NetConfig, PlateNet


@pytest.fixture(scope="module")
def net() -> PlateNet:
    import keras

    keras.utils.set_random_seed(0)
    return PlateNet(NetConfig())


def test_output_shapes(net):
    window = np.random.default_rng(0).integers(0, 255, (2, 64, 128, 1)).astype(np.float32)
    out = net.window_model(window, training=False)
    assert out["presence"].shape == (2, 1) and out["box"].shape == (2, 4)
    assert out["text"].shape == (2, 32, 37)  # 32 columns, 36 symbols + blank
    grid = net.detection_model(np.zeros((1, 720, 1280, 1), np.float32), training=False)
    assert grid["presence"].shape == (1, 720 // 8 - 7, 1280 // 8 - 15, 1)


def test_twin_agrees_with_the_window_model_on_the_same_window(net):
    window = np.random.default_rng(1).integers(0, 255, (1, 64, 128, 1)).astype(np.float32)
    single = net.window_model(window, training=False)
    grid = net.detection_model(window, training=False)
    np.testing.assert_allclose(grid["presence"].numpy().reshape(1), single["presence"].numpy().reshape(1),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grid["box"].numpy().reshape(4), single["box"].numpy().reshape(4),
                               rtol=1e-4, atol=1e-5)


def test_twin_cells_are_the_windows_on_an_8_pixel_grid():
    """Grid cell (r, c) is the window at (8r, 8c): of the window model's outputs at the cells' own
    offsets and at offsets one cell off, the cells' own follow the grid best. (Not equal: inside an
    image a cell sees real pixels past its window where the window model sees padding; that is why
    the committed model is used, whose outputs vary from window to window, and a plate scene.)"""
    import cv2
    from generated_scenes import generated_scenes

    model_dir = Path(__file__).resolve().parents[1] / "models" / "anprd-v10"
    meta = json.loads((model_dir / "model.json").read_text())
    trained = PlateNet(NetConfig.from_json(meta["net"]))
    trained.window_model.load_weights(model_dir / "weights.weights.h5")
    image, _ = generated_scenes(7, 1, size=(320, 200), plate_width=(90, 100))[0]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[None, :, :, None].astype(np.float32)
    grid = trained.detection_model(gray, training=False)["presence"].numpy()[0, :, :, 0]
    rows, cols = grid.shape
    windows = np.stack([gray[0, 8 * r: 8 * r + 64, 8 * c: 8 * c + 128]
                        for r in range(rows) for c in range(cols)])
    single = trained.window_model(windows, training=False)["presence"].numpy().reshape(rows, cols)
    inner = grid[1:-1, 1:-1].ravel()
    shifted = {(dr, dc): single[1 + dr: rows - 1 + dr, 1 + dc: cols - 1 + dc].ravel()
               for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    agreement = {offset: np.corrcoef(inner, cells)[0, 1] for offset, cells in shifted.items()}
    assert max(agreement, key=agreement.get) == (0, 0), agreement


def test_twin_shares_the_weights(net):
    window_vars = {id(v) for v in net.window_model.weights}
    assert all(id(v) in window_vars for v in net.detection_model.weights)


def test_reader_reads_32_columns_of_a_32x128_crop():
    from anprd.model import READER_H, READER_W, build_reader

    reader = build_reader()
    crops = np.random.default_rng(2).integers(0, 255, (3, READER_H, READER_W, 1)).astype(np.float32)
    assert reader(crops, training=False)["text"].shape == (3, 32, 37)


def test_a_reader_saved_before_the_plate_style_option_rebuilds_its_own_graph():
    from anprd.model import ReaderConfig, build_reader

    old = ReaderConfig.from_json({"widths": [32, 64, 96, 96, 128], "context": 160})
    assert (old.dilations, old.plate_style) == ((1, 2), False)
    names = {layer.name for layer in build_reader(old).layers}
    assert {"ctx1", "ctx2"} <= names and "ctx3" not in names and "plate_style" not in names
    assert ReaderConfig.from_json(ReaderConfig().to_json()) == ReaderConfig()
    assert "plate_style" in {layer.name for layer in build_reader().layers}


def test_the_detector_cuts_crops_of_the_size_the_reader_takes():
    from anprd import detector, model

    assert (detector.READER_H, detector.READER_W) == (model.READER_H, model.READER_W)
