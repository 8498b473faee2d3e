"""The window model and its fully convolutional detection twin share weights and agree."""

from __future__ import annotations

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


def test_twin_cells_are_the_windows_on_an_8_pixel_grid(net):
    """Away from image borders, grid cell (r, c) equals the window model on the crop at (8r, 8c)."""
    image = np.random.default_rng(2).integers(0, 255, (1, 160, 256, 1)).astype(np.float32)
    grid = net.detection_model(image, training=False)["presence"].numpy()[0, :, :, 0]
    r, c = 6, 8  # the window at (48, 64) lies well inside: 'same' padding effects stay outside it
    crop = image[:, 8 * r: 8 * r + 64, 8 * c: 8 * c + 128]
    single = net.window_model(crop, training=False)["presence"].numpy()[0, 0]
    # inside an image the window's borders see real neighbours instead of padding, so allow a margin
    assert abs(grid[r, c] - single) < 0.5 * (abs(single) + 1e-3) + 0.05


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
