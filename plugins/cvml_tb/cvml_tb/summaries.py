"""TensorBoard summaries built as protobufs, without a TensorFlow op per value.

``tf.summary.scalar`` / ``image`` / ``text`` run several eager ops each (the image
one encodes PNG through a ``map_fn``). Here the values of one run and step are packed
into one ``Summary`` with TensorBoard's own plugin metadata, in the same layout those
ops write, and the callback writes it as one event (``cvml_tb.events``).
No TensorFlow import: PNG encoding is zlib.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar.summary_v2 import scalar_pb
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.util import tensor_util

_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA


def encode_png(image: np.ndarray) -> bytes:
    """A PNG file of a uint8 (H, W, C) image, C in 1/3/4."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, channels = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = np.zeros((height, 1 + width * channels), np.uint8)  # filter byte 0 per row
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 3))  # 3: a third of 6's time
        + chunk(b"IEND", b"")
    )


def scalars(
    values: Mapping[str, float], descriptions: Mapping[str, str] | None = None
) -> summary_pb2.Summary:
    """One summary holding a scalar per tag (the scalars plugin's layout), as float32
    like ``tf.summary.scalar``; ``descriptions`` gives some tags a description."""
    summary = summary_pb2.Summary()
    descriptions = descriptions or {}
    for tag, number in values.items():
        summary.value.extend(scalar_pb(tag, number, descriptions.get(tag)).value)
    return summary


def keras_graph(model_json: str, tag: str = "keras") -> summary_pb2.Summary:
    """A Keras model's JSON as the graphs plugin's conceptual graph, laid out as
    ``keras.callbacks.TensorBoard`` writes it (tag ``keras``, plugin
    ``graph_keras_model``, version ``1``)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "graph_keras_model"
    metadata.plugin_data.content = b"1"
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=metadata,
        tensor=tensor_util.make_tensor_proto(np.array(model_json.encode(), dtype=np.object_)),
    )
    return summary


def image(tag: str, picture: np.ndarray, description: str | None = None) -> summary_pb2.Summary:
    """One image (H, W, C uint8) as the images plugin stores it: [width, height, png]."""
    height, width = picture.shape[:2]
    data = np.array([str(width).encode(), str(height).encode(), encode_png(picture)], object)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=image_metadata.create_summary_metadata(None, description),
        tensor=tensor_util.make_tensor_proto(data, dtype=np.object_),
    )
    return summary


def text(tag: str, markdown: str, description: str | None = None) -> summary_pb2.Summary:
    """One Markdown text (the text plugin's layout)."""
    return text_pb(tag, markdown, description)


def histogram(tag: str, values: np.ndarray) -> summary_pb2.Summary:
    """A histogram of ``values`` in ``tf.summary.histogram``'s layout (30 buckets)."""
    return histogram_pb(tag, np.asarray(values, dtype=np.float64))


def merge(*summaries: summary_pb2.Summary) -> summary_pb2.Summary:
    """The union of ``summaries``, written as one event."""
    merged = summary_pb2.Summary()
    for summary in summaries:
        merged.value.extend(summary.value)
    return merged
