"""The plate network: one set of weights, two views.

`window_model` reads a single 64x128 grayscale window and answers three questions:
  presence  - is there a plate by the seed's presence rule? (1 logit)
  box       - where is it? plate x0, y0, x1, y1 as fractions of the window (4 values)
  text      - what does it say? per-column CTC logits, 32 columns x (36 symbols + blank)

`detection_model` is the same backbone and presence/box head run fully convolutionally over an image of
any size: output cell (r, c) is the window whose top-left corner is (8r, 8c) in the input. Text is not
computed over the whole image; the detector re-reads each grouped plate with `window_model` on a crop
centred on the plate, which is cheaper and better framed than any one grid window.

Why a per-column CTC head instead of the seed's 7 fixed softmaxes: CTC reads any length (1-10+ here)
and does not tie a character to a fixed slot, the failure the 30-minute probe in FINDINGS showed
(dropped and repeated characters with a dense positional head).

Backbone: a 3x3/2 stem and depthwise-separable blocks (MobileNet style), output stride 8 vertically and
4 horizontally, sized for real time on 2 CPU cores (measured figures: docs/speed.md).

`build_reader` is a second, separate network that only reads: a 32x128 crop of one found plate (the
box stretched to the whole input, `anprd.detector.reader_crop`) -> the same per-column CTC logits.
In the window a plate is ~70% of 128 px wide, so its letters are small; the reader gives them the
whole crop and reads far better (docs/design.md, "Why these choices"). A model folder may ship one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import layers

from anprd.ctc import ALPHABET

__all__ = ["GRID_STRIDE", "READER_H", "READER_W", "WINDOW_H", "WINDOW_W", "NetConfig", "PlateNet",
           "ReaderConfig", "build_reader"]

WINDOW_H, WINDOW_W = 64, 128
GRID_STRIDE = 8  # pixels between neighbouring windows of detection_model's output grid
TEXT_COLUMNS = WINDOW_W // 4


@dataclass(frozen=True)
class NetConfig:
    """Widths of the network; saved beside the weights so inference rebuilds the same graph."""

    stem: int = 16
    blocks: tuple[tuple[int, int, int], ...] = (  # (channels, stride_y, stride_x)
        (32, 2, 2), (48, 1, 1), (64, 2, 1), (64, 1, 1), (96, 1, 1))
    presence_channels: int = 96
    presence_hidden: int = 128
    text_channels: int = 128

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> NetConfig:
        data = dict(data)
        data["blocks"] = tuple(tuple(b) for b in data["blocks"])
        return cls(**data)


def _separable(channels: int, strides: tuple[int, int], name: str) -> list[layers.Layer]:
    # TF's CPU depthwise kernel only takes equal strides: pool after a stride-1 depthwise instead
    if strides[0] == strides[1]:
        depthwise = [layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                            name=f"{name}_dw")]
    else:
        depthwise = [layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw"),
                     layers.MaxPooling2D(strides, strides=strides, padding="same", name=f"{name}_pool")]
    return [
        *depthwise,
        layers.BatchNormalization(name=f"{name}_dw_bn"),
        layers.ReLU(name=f"{name}_dw_relu"),
        layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw"),
        layers.BatchNormalization(name=f"{name}_pw_bn"),
        layers.ReLU(name=f"{name}_pw_relu"),
    ]


class PlateNet:
    """Owns the layers; builds the window and detection models that share them."""

    def __init__(self, config: NetConfig | None = None) -> None:
        self.config = config or NetConfig()
        c = self.config
        self.backbone: list[layers.Layer] = [
            layers.Rescaling(1 / 255.0, offset=-0.5, name="rescale"),
            layers.Conv2D(c.stem, 3, strides=2, padding="same", use_bias=False, name="stem"),
            layers.BatchNormalization(name="stem_bn"),
            layers.ReLU(name="stem_relu"),
        ]
        # the stem halves both axes; blocks bring the total to (8, 4)
        for i, (ch, sy, sx) in enumerate(c.blocks):
            self.backbone += _separable(ch, (sy, sx), f"block{i}")
        # presence + box head: stride (8, 8) features, then one window-sized depthwise "dense"
        self.presence_head: list[layers.Layer] = _separable(c.presence_channels, (1, 2), "pres")
        self.presence_head += [
            layers.DepthwiseConv2D((WINDOW_H // 8, WINDOW_W // 8), padding="valid", name="pres_window"),
            layers.Conv2D(c.presence_hidden, 1, activation="relu", name="pres_hidden"),
        ]
        self.presence_out = layers.Conv2D(1, 1, name="presence")
        self.box_out = layers.Conv2D(4, 1, name="box")
        # text head: collapse the 8 rows, then context along the columns
        self.text_head: list[layers.Layer] = [
            layers.Conv2D(c.text_channels, (WINDOW_H // 8, 1), padding="valid", activation="relu",
                          name="text_rows"),
            layers.Reshape((TEXT_COLUMNS, c.text_channels), name="text_columns"),
            layers.Conv1D(c.text_channels, 3, padding="same", activation="relu", name="text_ctx1"),
            layers.Conv1D(c.text_channels, 3, padding="same", dilation_rate=2, activation="relu",
                          name="text_ctx2"),
        ]
        self.text_out = layers.Dense(len(ALPHABET) + 1, name="text")
        self.window_model = self._build_window_model()
        self.detection_model = self._build_detection_model()

    @staticmethod
    def _run(x, stack: list[layers.Layer]):
        for layer in stack:
            x = layer(x)
        return x

    def _build_window_model(self) -> keras.Model:
        image = keras.Input((WINDOW_H, WINDOW_W, 1), name="window")
        features = self._run(image, self.backbone)
        pres = self._run(features, self.presence_head)
        presence = layers.Reshape((1,), name="presence_flat")(self.presence_out(pres))
        box = layers.Reshape((4,), name="box_flat")(self.box_out(pres))
        text = self.text_out(self._run(features, self.text_head))
        return keras.Model(image, {"presence": presence, "box": box, "text": text}, name="window_model")

    def _build_detection_model(self) -> keras.Model:
        image = keras.Input((None, None, 1), name="image")
        pres = self._run(self._run(image, self.backbone), self.presence_head)
        return keras.Model(image, {"presence": self.presence_out(pres), "box": self.box_out(pres)},
                           name="detection_model")


# --------------------------------------------------------------------------------------------------
# The reader: a second network that only reads, on a tight crop of a found plate
# --------------------------------------------------------------------------------------------------
READER_H, READER_W = 32, 128
READER_COLUMNS = READER_W // 4


@dataclass(frozen=True)
class ReaderConfig:
    """Widths of the reader; saved beside its weights."""

    widths: tuple[int, ...] = (32, 64, 96, 96, 128)  # 3x3 convs; pools after the 1st, 2nd and 4th
    context: int = 160
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # 1-D context convs along the text, 31 columns wide
    plate_style: bool = True  # a whole-plate summary beside every column

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ReaderConfig:
        # readers saved before `dilations` and `plate_style` existed (r5) had two context convs only
        data = {"dilations": (1, 2), "plate_style": False, **data}
        data["widths"] = tuple(data["widths"])
        data["dilations"] = tuple(data["dilations"])
        return cls(**data)


def build_reader(config: ReaderConfig | None = None) -> keras.Model:
    """32x128 plate crop -> per-column CTC logits, 32 columns x (36 symbols + blank).

    A small CRNN without the recurrence: plain 3x3 convolutions (full convolutions learn faster than
    separable ones at this size, and one crop per plate costs little), pooled 2x2, 2x2 and 2x1 to
    4x32, the 4 rows collapsed, then dilated 1-D convolutions for context along the text. The
    detector's window sees a plate ~70% of 128 px wide; this crop gives the text the whole input.

    `plate_style` sets a summary of the whole plate (its columns averaged) beside every column, and
    dilations 1-8 let each column see the whole text: a narrow ring with no dot is 0 in most plate
    typefaces and O in a monospaced one whose 0 is dotted, which only the rest of the plate tells.
    """
    c = config or ReaderConfig()
    x = image = keras.Input((READER_H, READER_W, 1), name="plate")
    x = layers.Rescaling(1 / 255.0, offset=-0.5, name="rescale")(x)
    pools = {0: (2, 2), 1: (2, 2), 3: (2, 1)}
    for i, width in enumerate(c.widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.ReLU(name=f"conv{i}_relu")(x)
        if i in pools:
            x = layers.MaxPooling2D(pools[i], name=f"pool{i}")(x)
    x = layers.Conv2D(c.context, (READER_H // 8, 1), activation="relu", name="rows")(x)
    x = layers.Reshape((READER_COLUMNS, c.context), name="columns")(x)
    if c.plate_style:
        style = layers.GlobalAveragePooling1D(name="plate_pool")(x)
        style = layers.Dense(c.context, activation="relu", name="plate_style")(style)
        style = layers.RepeatVector(READER_COLUMNS, name="plate_style_columns")(style)
        x = layers.Concatenate(name="columns_and_style")([x, style])
    for i, dilation in enumerate(c.dilations):
        x = layers.Conv1D(c.context, 3, padding="same", dilation_rate=dilation, activation="relu",
                          name=f"ctx{i + 1}")(x)
    text = layers.Dense(len(ALPHABET) + 1, name="text")(x)
    return keras.Model(image, {"text": text}, name="reader")
