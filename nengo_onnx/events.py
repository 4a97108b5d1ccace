"""TensorBoard event files, written (and read back) without TensorFlow.

Used by ``sim.train(summaries=...)`` (`nengo_onnx.training.train`) and by the
`nengo_onnx.callbacks.TensorBoard` callback of ``sim.fit``: a leaf module (standard
library and numpy only), so that user-facing modules can write them too.

An event file is a sequence of TFRecords (``uint64 length``, masked CRC32C of
the length, the payload, masked CRC32C of the payload); each payload is an
``Event`` protocol buffer holding a ``Summary`` of scalars or histograms. Only
the few fields TensorBoard needs are written, encoded by hand (the protobuf
wire format is simple: varint keys, varints, 64-bit doubles, length-delimited
bytes).

Layout, as NengoDL's: ``Simulator(..., tensorboard=dir)`` writes each
simulator's summaries into ``dir/run_<n>`` (the next free ``n``, so every run
of a script gets its own run), and the ``k``-th `train` call with summaries
suffixes its tags with ``_k`` (``loss``, ``loss_1``, ``loss_2``). View them with
``tensorboard --logdir dir``.
"""

import os
import socket
import struct
import time

import numpy as np

# -- CRC32C (Castagnoli), as TFRecord needs -------------------------------------------------

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- protobuf wire format ---------------------------------------------------------------


def _varint(value):
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field, wire_type):
    return _varint((field << 3) | wire_type)


def _double(field, value):
    return _key(field, 1) + struct.pack("<d", float(value))


def _float(field, value):
    return _key(field, 5) + struct.pack("<f", float(value))


def _int(field, value):
    return _key(field, 0) + _varint(int(value))


def _bytes(field, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _key(field, 2) + _varint(len(payload)) + payload


def _packed_doubles(field, values):
    return _bytes(field, struct.pack(f"<{len(values)}d", *values))


def _histogram(values, bins=30):
    """A ``HistogramProto`` of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        values = np.zeros(1)
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return (
        _double(1, values.min())
        + _double(2, values.max())
        + _double(3, values.size)
        + _double(4, values.sum())
        + _double(5, np.dot(values, values))
        + _packed_doubles(6, edges[1:])
        + _packed_doubles(7, counts)
    )


def _event(step, summary_values=None, file_version=None, wall_time=None):
    event = _double(1, time.time() if wall_time is None else wall_time) + _int(2, step)
    if file_version is not None:
        event += _bytes(3, file_version)
    if summary_values is not None:
        event += _bytes(5, b"".join(_bytes(1, v) for v in summary_values))
    return event


def _record(payload):
    header = struct.pack("<Q", len(payload))
    return (
        header
        + struct.pack("<I", _masked_crc(header))
        + payload
        + struct.pack("<I", _masked_crc(payload))
    )


class EventWriter:
    """Appends scalar and histogram summaries to one TensorBoard event file."""

    def __init__(self, logdir, suffix=""):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}{suffix}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")  # noqa: SIM115  (closed in close())
        self._file.write(_record(_event(0, file_version="brain.Event:2")))
        self._file.flush()

    def scalar(self, tag, value, step):
        self._write(step, _bytes(1, tag) + _float(2, value))

    def histogram(self, tag, values, step):
        self._write(step, _bytes(1, tag) + _bytes(5, _histogram(values)))

    def _write(self, step, value):
        self._file.write(_record(_event(step, [value])))

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def next_run_dir(logdir):
    """``logdir/run_<n>`` for the smallest ``n`` above every existing run."""
    os.makedirs(logdir, exist_ok=True)
    numbers = [-1]
    for entry in os.listdir(logdir):
        if entry.startswith("run_") and entry[4:].isdigit():
            numbers.append(int(entry[4:]))
    path = os.path.join(logdir, f"run_{max(numbers) + 1}")
    os.makedirs(path, exist_ok=True)
    return path


# -- reading (for tests and users without TensorBoard) ---------------------------------------


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """``[(field, value)]`` of a protobuf message (values: int, bytes or raw 8/4 bytes)."""
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack("<d", buf[pos : pos + 8])[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack("<f", buf[pos : pos + 4])[0], pos + 4
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + n]), pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def _parse_histogram(buf):
    hist = {"bucket_limit": [], "bucket": []}
    names = {1: "min", 2: "max", 3: "num", 4: "sum", 5: "sum_squares"}
    for field, value in _fields(buf):
        if field in names:
            hist[names[field]] = value
        elif field in (6, 7):
            key = "bucket_limit" if field == 6 else "bucket"
            hist[key].extend(struct.unpack(f"<{len(value) // 8}d", value))
    return hist


def read_events(path):
    """The summaries in event file ``path``: ``[(step, tag, value)]``.

    Scalars are floats; histograms are dicts (``min``, ``max``, ``num``, ``sum``,
    ``sum_squares``, ``bucket_limit``, ``bucket``). Checks every CRC.
    """
    with open(path, "rb") as f:
        data = f.read()
    pos, events = 0, []
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + 12])[0] != _masked_crc(header):
            raise ValueError(f"corrupt record header in {path}")
        payload = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] != _masked_crc(
            payload
        ):
            raise ValueError(f"corrupt record in {path}")
        pos += 16 + length
        step = 0
        summary = None
        for field, value in _fields(payload):
            if field == 2:
                step = value
            elif field == 5:
                summary = value
        if summary is None:
            continue
        for field, value in _fields(summary):
            if field != 1:
                continue
            tag, item = None, None
            for f2, v2 in _fields(value):
                if f2 == 1:
                    tag = v2.decode("utf-8")
                elif f2 == 2:
                    item = v2
                elif f2 == 5:
                    item = _parse_histogram(v2)
            events.append((step, tag, item))
    return events


def read_run(run_dir):
    """All summaries of the event files in ``run_dir``, in file order."""
    files = sorted(f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents"))
    events = []
    for name in files:
        events.extend(read_events(os.path.join(run_dir, name)))
    return events
