"""Pose shards on disk (one Parquet row per clip) and their packing into one array for training.

Shard layout
------------
One row per clip, columns (see :data:`SHARD_COLUMNS`):

* ``sample_id`` (string), ``status`` (``ok``, ``no_person``, ``failed``,
  ``skipped_unusable_clip``), ``reason``/``detail`` (nullable strings: why a clip failed,
  or notes such as skipped undecodable packets);
* ``num_frames`` (int32; frames with keypoints, 0 when there are none), ``fps`` (float32),
  ``width``/``height`` (int32; nullable when the clip could not be opened),
  ``frames_with_body``/``frames_with_left_hand``/``frames_with_right_hand`` (int32),
  ``decode_errors`` (int32: packets that could not be decoded and were skipped);
* ``keypoints``: ``list<fixed_size_list<float32, P*4>>``, one entry per frame holding the
  flattened ``P x 4`` array of :mod:`sldata.pose.skeleton`; null for clips without
  keypoints (``failed``, ``skipped_unusable_clip``). ``no_person`` clips keep their
  all-missing frames.

Schema metadata: ``sldata.skeleton`` (:meth:`Skeleton.to_json`) and ``sldata.pose_settings``
(JSON of the settings that determine the keypoints). Files are zstd-compressed and written
atomically. Reading needs no project code::

    t = pyarrow.parquet.read_table(path)
    parts = json.loads(t.schema.metadata[b"sldata.skeleton"])["parts"]
    P = sum(len(names) for names in parts.values())
    kp = numpy.asarray(t["keypoints"][0].values.flatten()).reshape(-1, P, 4)  # first clip

Keypoint storage
----------------
The layout above is ``float32`` storage (the default, lossless). ``compact`` storage
(``pose.storage: compact``; :func:`convert_pose_shard` converts either way) replaces the
``keypoints`` column by four fixed-point columns, one per component: ``x_q``, ``y_q``, ``z_q``,
``confidence_q``, each ``list<fixed_size_list<int32, P>>`` (one entry per frame, one value per
point, null for clips without keypoints), with ``value = q * scale`` and ``scale`` =
:data:`COMPACT_SCALE` = 2**-14 (so every decoded value is exactly a float32; error at most
2**-15 = 3.05e-5 of the frame side, 0.0078 px at 256 px). A missing point has null ``x_q``,
``y_q``, ``z_q`` (NaN once decoded) and ``confidence_q`` 0, as in float32 storage. The columns are
written with Parquet's BYTE_STREAM_SPLIT encoding and zstd level 9 (about 3.7x smaller than ``float32``
on the real WLASL100 keypoints; ``bench/bench_pose.py --storage-only``). The schema metadata
``sldata.keypoint_storage`` says how to decode (JSON: ``storage``, ``scale``, ``columns``).
Reading needs no project code::

    t = pyarrow.parquet.read_table(path)
    scale = json.loads(t.schema.metadata[b"sldata.keypoint_storage"])["scale"]
    x = t["x_q"][0].values.flatten().to_numpy(zero_copy_only=False) * scale  # nulls -> NaN
    # or with pandas: numpy.stack(pandas.read_parquet(path)["x_q"][0]) * scale  -> [frames, P]

:func:`read_pose_shard`, :func:`table_keypoints` and :func:`pack_pose_arrays` read both
layouts and always return float32 ``[frames, P, 4]``.

Packed arrays
-------------
:func:`pack_pose_arrays` concatenates the ``ok`` clips of a subset into ``keypoints.npy``
(``[total_frames, P_selected, 4]`` float32, memory-mappable) with ``index.parquet`` giving
each clip's ``offset`` and ``length`` along the first axis (nanoGPT-style), and
``skeleton.json`` describing the selected points. ``skeleton.json`` is written last and is
the completion marker: :func:`load_packed` refuses a folder without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sldata.atomic import atomic_path, write_json
from sldata.pose.skeleton import COMPONENTS, Skeleton

SKELETON_KEY = b"sldata.skeleton"
SETTINGS_KEY = b"sldata.pose_settings"
STORAGE_KEY = b"sldata.keypoint_storage"
"""Schema metadata of ``compact`` shards: JSON ``{"storage", "scale", "columns", ...}`` (absent in float32 shards)."""
KEYPOINT_STORAGES: tuple[str, ...] = ("float32", "compact")
"""Keypoint storages of a shard: ``float32`` (one ``keypoints`` column, lossless) or ``compact``."""
COMPACT_SCALE = 2.0 ** -14
"""Step of ``compact`` storage in normalized units (1/16384 of the frame side: 0.0156 px at 256 px)."""
COMPACT_COLUMNS: tuple[str, ...] = tuple(f"{c}_q" for c in COMPONENTS)
"""Columns of ``compact`` storage, one per component of :data:`COMPONENTS`."""
KEYPOINT_COLUMNS: dict[str, tuple[str, ...]] = {"float32": ("keypoints",), "compact": COMPACT_COLUMNS}
"""The keypoint columns of each storage."""
COMPACT_ZSTD_LEVEL = 9
"""zstd level of ``compact`` shards (3 % smaller than Arrow's default level 1, for ~0.3 CPU-s per
shard); ``float32`` shards keep the default, so their bytes do not change."""
_COMPACT_LIMIT = 2.0 ** 24 * COMPACT_SCALE
"""Largest magnitude stored exactly (``|q| < 2**24`` is exact in float32): 1024 frame sides."""
ROW_GROUP_SIZE = 64
"""Clips per Parquet row group (fixed, so a shard's bytes depend only on its rows)."""

SHARD_COLUMNS: list[tuple[str, pa.DataType, bool]] = [
    ("sample_id", pa.string(), False),
    ("status", pa.string(), False),
    ("reason", pa.string(), True),
    ("detail", pa.string(), True),
    ("num_frames", pa.int32(), False),
    ("fps", pa.float32(), True),
    ("width", pa.int32(), True),
    ("height", pa.int32(), True),
    ("frames_with_body", pa.int32(), False),
    ("frames_with_left_hand", pa.int32(), False),
    ("frames_with_right_hand", pa.int32(), False),
    ("decode_errors", pa.int32(), False),
]
"""Scalar columns of a shard (name, type, nullable); ``keypoints`` follows them."""

PACK_INDEX_COLUMNS: tuple[str, ...] = ("sample_id", "label", "split", "gloss", "signer_id", "width", "height", "fps",
                                        "offset", "length")


@dataclass
class ClipPose:
    """One clip's row of a pose shard; ``keypoints`` is ``[num_frames, P, 4]`` float32 or ``None``."""

    sample_id: str
    status: str
    reason: str | None = None
    detail: str | None = None
    num_frames: int = 0
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames_with_body: int = 0
    frames_with_left_hand: int = 0
    frames_with_right_hand: int = 0
    decode_errors: int = 0
    keypoints: np.ndarray | None = None


def shard_schema(skeleton: Skeleton, settings_dict: Mapping[str, Any], storage: str = "float32") -> pa.Schema:
    """The Arrow schema of a shard of ``skeleton`` points, with its metadata, in keypoint ``storage``."""
    width = skeleton.num_points * len(COMPONENTS)
    cols = [pa.field(name, typ, nullable=nullable) for name, typ, nullable in SHARD_COLUMNS]
    meta = {SKELETON_KEY: skeleton.to_json().encode(),
            SETTINGS_KEY: json.dumps(dict(settings_dict), sort_keys=True).encode()}
    if check_storage(storage) == "compact":
        cols += [pa.field(name, pa.list_(pa.list_(pa.int32(), skeleton.num_points)), nullable=True)
                 for name in COMPACT_COLUMNS]
        meta[STORAGE_KEY] = _storage_metadata()
    else:
        cols.append(pa.field("keypoints", pa.list_(pa.list_(pa.float32(), width)), nullable=True))
    return pa.schema(cols, metadata=meta)


def _as_record(rec: ClipPose | Mapping[str, Any]) -> ClipPose:
    if isinstance(rec, ClipPose):
        return rec
    names = {f.name for f in fields(ClipPose)}
    unknown = sorted(set(rec) - names)
    if unknown:
        raise ValueError(f"pose record {rec.get('sample_id')!r} has unknown field(s) {unknown}")
    return ClipPose(**rec)


def _keypoints_array(records: Sequence[ClipPose], num_points: int) -> pa.Array:
    """The ``keypoints`` column: checks each clip's array against the skeleton."""
    rows: list[np.ndarray | None] = []
    for rec in records:
        kp = rec.keypoints
        if kp is not None:
            kp = np.asarray(kp)
            if kp.ndim != 3 or kp.shape[1:] != (num_points, len(COMPONENTS)):
                raise ValueError(f"clip {rec.sample_id!r}: keypoints have shape {kp.shape}, expected "
                                 f"[frames, {num_points}, {len(COMPONENTS)}] for this skeleton")
            if kp.shape[0] != rec.num_frames:
                raise ValueError(f"clip {rec.sample_id!r}: {kp.shape[0]} keypoint frames but "
                                 f"num_frames={rec.num_frames}")
        rows.append(kp)
    return _float_keypoints_column(rows, num_points)


def _float_keypoints_column(rows: Sequence[np.ndarray | None], num_points: int) -> pa.Array:
    """The float32 ``keypoints`` column of per-row ``[frames, num_points, 4]`` arrays (``None``: null)."""
    width = num_points * len(COMPONENTS)
    lengths = np.zeros(len(rows), dtype=np.int32)
    mask = np.zeros(len(rows), dtype=bool)
    chunks: list[np.ndarray] = []
    for i, kp in enumerate(rows):
        if kp is None:
            mask[i] = True
            continue
        lengths[i] = kp.shape[0]
        chunks.append(np.ascontiguousarray(kp, dtype=np.float32).reshape(-1))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), width)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), frames,
                                    type=pa.list_(pa.list_(pa.float32(), width)),
                                    mask=pa.array(mask, type=pa.bool_()))


def records_to_table(records: Iterable[ClipPose | Mapping[str, Any]], skeleton: Skeleton,
                     settings_dict: Mapping[str, Any]) -> pa.Table:
    """Build a shard table (rows in the given order).

    Raises
    ------
    ValueError
        A duplicate ``sample_id``, or keypoints whose shape does not match the skeleton or
        ``num_frames`` (the clip is named).
    """
    recs = [_as_record(r) for r in records]
    seen: set[str] = set()
    for rec in recs:
        if rec.sample_id in seen:
            raise ValueError(f"duplicate sample_id {rec.sample_id!r} in pose records")
        seen.add(rec.sample_id)
    schema = shard_schema(skeleton, settings_dict)
    columns = [pa.array([getattr(r, name) for r in recs], type=typ) for name, typ, _ in SHARD_COLUMNS]
    columns.append(_keypoints_array(recs, skeleton.num_points))
    return pa.Table.from_arrays(columns, schema=schema)


def check_storage(storage: str) -> str:
    """``storage`` if it is one of :data:`KEYPOINT_STORAGES`, else ``ValueError``."""
    if storage not in KEYPOINT_STORAGES:
        raise ValueError(f"keypoint storage must be one of {KEYPOINT_STORAGES}, got {storage!r}")
    return storage


def table_storage(schema: pa.Schema) -> str:
    """The keypoint storage of a shard table or file schema: ``float32`` or ``compact``.

    Raises
    ------
    ValueError
        The schema has neither a ``keypoints`` column nor the ``compact`` columns and metadata.
    """
    meta = schema.metadata or {}
    if STORAGE_KEY in meta:
        storage = json.loads(meta[STORAGE_KEY]).get("storage")
        check_storage(storage)
        lacking = [c for c in KEYPOINT_COLUMNS[storage] if c not in schema.names]
        if lacking:
            raise ValueError(f"pose shard says storage {storage!r} but lacks column(s) {lacking}")
        return storage
    if "keypoints" in schema.names:
        return "float32"
    raise ValueError("not a pose shard table: no keypoints column and no "
                     f"{STORAGE_KEY.decode()} metadata")


def shard_storage(path: str | os.PathLike[str]) -> str:
    """The keypoint storage of the shard file ``path`` (``float32`` or ``compact``), from its schema only."""
    return table_storage(pq.read_schema(path))


def _whole(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _storage_metadata() -> bytes:
    return json.dumps({"storage": "compact", "scale": COMPACT_SCALE, "columns": list(COMPACT_COLUMNS),
                       "components": list(COMPONENTS), "layout": "one list entry per frame, one value per point",
                       "decode": "value = q * scale; a null q is a missing point (NaN)"}, sort_keys=True).encode()


def compact_table(table: pa.Table) -> pa.Table:
    """A float32 shard table in ``compact`` storage (see the module docs); other columns and metadata kept.

    Every finite value ``v`` becomes ``q = round(v / COMPACT_SCALE)`` (int32), NaN becomes null.
    A table already in ``compact`` storage is returned as it is.

    Raises
    ------
    ValueError
        A value of magnitude 1024 or more, or infinite (it cannot be stored; the clip is named).
    """
    if table_storage(table.schema) == "compact":
        return table
    col = _whole(table.column("keypoints"))
    width = col.type.value_type.list_size
    num_points = width // len(COMPONENTS)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(col) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    clip_mask = pa.array(col.is_null().to_numpy(zero_copy_only=False), type=pa.bool_())
    flat = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, num_points, len(COMPONENTS))
    missing = np.isnan(flat)
    bad = ~missing & ~(np.abs(flat) < _COMPACT_LIMIT)
    if bad.any():
        frame = int(np.nonzero(bad)[0][0])
        row = int(np.searchsorted(offsets, frame, side="right") - 1)
        raise ValueError(f"clip {table.column('sample_id')[row].as_py()!r}: keypoint value "
                         f"{flat[bad][0]!r} cannot be stored compact (|value| must be < {_COMPACT_LIMIT:g})")
    q = np.rint(np.where(missing, 0.0, flat) / np.float32(COMPACT_SCALE)).astype(np.int32)
    typ = pa.list_(pa.list_(pa.int32(), num_points))
    arrays: list[pa.Array] = []
    for i in range(len(COMPONENTS)):
        miss = np.ascontiguousarray(missing[..., i]).reshape(-1)
        values = pa.array(np.ascontiguousarray(q[..., i]).reshape(-1), type=pa.int32(),
                          mask=miss if miss.any() else None)
        frames = pa.FixedSizeListArray.from_arrays(values, num_points)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), frames, type=typ, mask=clip_mask))
    at = table.schema.get_field_index("keypoints")
    fields = list(table.schema)
    columns = list(table.columns)
    fields[at:at + 1] = [pa.field(name, typ, nullable=True) for name in COMPACT_COLUMNS]
    columns[at:at + 1] = arrays
    meta = dict(table.schema.metadata or {})
    meta[STORAGE_KEY] = _storage_metadata()
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=meta))


def float32_table(table: pa.Table) -> pa.Table:
    """A shard table in ``float32`` storage (decoded from ``compact``); other columns and metadata kept.

    A table already in ``float32`` storage is returned as it is.
    """
    if table_storage(table.schema) == "float32":
        return table
    num_points = _whole(table.column(COMPACT_COLUMNS[0])).type.value_type.list_size
    rows = table_keypoints(table, num_points)
    at = table.schema.get_field_index(COMPACT_COLUMNS[0])
    fields = [f for f in table.schema if f.name not in COMPACT_COLUMNS]
    columns = [c for f, c in zip(table.schema, table.columns) if f.name not in COMPACT_COLUMNS]
    fields.insert(at, pa.field("keypoints", pa.list_(pa.list_(pa.float32(), num_points * len(COMPONENTS))),
                               nullable=True))
    columns.insert(at, _float_keypoints_column(rows, num_points))
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != STORAGE_KEY}
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=meta))


def convert_table(table: pa.Table, storage: str) -> pa.Table:
    """``table`` in keypoint ``storage`` (``float32`` or ``compact``).

    Keypoint columns get the canonical list types (child fields named ``item``, as the writer
    makes them; Parquet files read back name them ``element``), so a shard read and written
    back in its own storage keeps its bytes.
    """
    table = compact_table(table) if check_storage(storage) == "compact" else float32_table(table)
    fields = []
    for field in table.schema:
        if field.name in KEYPOINT_COLUMNS[storage]:
            inner = field.type.value_type
            field = field.with_type(pa.list_(pa.list_(inner.value_type, inner.list_size)))
        fields.append(field)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def write_table(table: pa.Table, path: str | os.PathLike[str], storage: str | None = None) -> None:
    """Write a shard table atomically (zstd, fixed row groups, contiguous buffers: deterministic bytes).

    ``storage`` (``float32`` or ``compact``) converts the table first; ``None`` writes it in the
    storage it has. ``compact`` columns use BYTE_STREAM_SPLIT (no dictionary), and ``compact``
    shards zstd level :data:`COMPACT_ZSTD_LEVEL` (float32 ones Arrow's default level).
    """
    if storage is not None:
        table = convert_table(table, storage)
    table = table.combine_chunks()
    with atomic_path(path) as tmp:
        if table_storage(table.schema) == "float32":
            pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
        else:
            pq.write_table(table, tmp, compression="zstd", compression_level=COMPACT_ZSTD_LEVEL,
                           row_group_size=ROW_GROUP_SIZE,
                           use_dictionary=[n for n in table.column_names if n not in COMPACT_COLUMNS],
                           column_encoding={f"{c}.list.element.list.element": "BYTE_STREAM_SPLIT"
                                            for c in COMPACT_COLUMNS})


def write_pose_shard(records: Iterable[ClipPose | Mapping[str, Any]], path: str | os.PathLike[str],
                     skeleton: Skeleton, settings_dict: Mapping[str, Any], storage: str = "float32") -> Path:
    """Write clip records as a pose shard at ``path`` (atomically), rows in the given order.

    Parameters
    ----------
    records
        :class:`ClipPose` objects or mappings with its fields.
    skeleton
        Layout of the keypoints; every array must be ``[num_frames, skeleton.num_points, 4]``.
    settings_dict
        The settings that produced the keypoints, stored as JSON metadata.
    storage
        Keypoint storage: ``float32`` (lossless) or ``compact`` (see the module docs).
    """
    write_table(records_to_table(records, skeleton, settings_dict), path, storage=check_storage(storage))
    return Path(path)


def convert_pose_shard(src: str | os.PathLike[str], dst: str | os.PathLike[str], storage: str) -> dict[str, Any]:
    """Rewrite the shard ``src`` in keypoint ``storage`` at ``dst`` (atomically; ``dst`` may be ``src``).

    Scalar columns, the skeleton and settings metadata are kept. ``float32 -> compact`` rounds to
    :data:`COMPACT_SCALE`; ``compact -> float32`` writes the decoded values (the rounding stays).

    Returns
    -------
    dict
        ``clips``, ``from`` and ``to`` (storages), ``bytes_before``, ``bytes_after``.
    """
    check_storage(storage)
    _metadata(src)  # a pose shard
    before = Path(src).stat().st_size
    table = pq.read_table(src)
    source = table_storage(table.schema)
    write_table(table, dst, storage=storage)
    return {"clips": table.num_rows, "from": source, "to": storage, "bytes_before": before,
            "bytes_after": Path(dst).stat().st_size}


def _metadata(path: str | os.PathLike[str]) -> dict[bytes, bytes]:
    meta = pq.read_schema(path).metadata or {}
    if SKELETON_KEY not in meta:
        raise ValueError(f"{path} is not a pose shard: its schema has no {SKELETON_KEY.decode()} metadata")
    return meta


def read_skeleton(path: str | os.PathLike[str]) -> Skeleton:
    """The :class:`Skeleton` stored in a shard's metadata."""
    return Skeleton.from_dict(json.loads(_metadata(path)[SKELETON_KEY]))


def read_pose_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The pose settings stored in a shard's metadata."""
    return json.loads(_metadata(path).get(SETTINGS_KEY, b"{}"))


def _pandas(table: pa.Table) -> pd.DataFrame:
    """Scalar columns as pandas, keeping nullable ints as ``Int32``."""
    mapping = {pa.int32(): pd.Int32Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def split_keypoints(column: pa.ChunkedArray | pa.Array, num_points: int) -> list[np.ndarray | None]:
    """Per row, the ``[frames, num_points, 4]`` array (a read-only view into Arrow memory) or ``None``.

    ``column`` is the ``keypoints`` column of ``float32`` storage; :func:`table_keypoints` reads
    either storage.
    """
    column = _whole(column)
    width = num_points * len(COMPONENTS)
    if column.type.value_type.list_size != width:
        raise ValueError(f"keypoints hold {column.type.value_type.list_size} values per frame, "
                         f"the skeleton needs {width} ({num_points} points x {len(COMPONENTS)})")
    offsets = column.offsets.to_numpy()  # absolute positions in column.values
    flat = column.values.flatten().to_numpy(zero_copy_only=False)
    arr = flat.reshape(-1, num_points, len(COMPONENTS))
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [arr[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(column))]


def _compact_keypoints(table: pa.Table, num_points: int) -> list[np.ndarray | None]:
    """Per row, the decoded ``[frames, num_points, 4]`` float32 array (read-only) or ``None``."""
    scale = float(json.loads(table.schema.metadata[STORAGE_KEY])["scale"])
    cols = [_whole(table.column(name)) for name in COMPACT_COLUMNS]
    for name, col in zip(COMPACT_COLUMNS, cols):
        if col.type.value_type.list_size != num_points:
            raise ValueError(f"{name} holds {col.type.value_type.list_size} values per frame, "
                             f"the skeleton has {num_points} points")
    offsets = cols[0].offsets.to_numpy()  # absolute positions in .values
    valid = cols[0].is_valid().to_numpy(zero_copy_only=False)
    for name, col in zip(COMPACT_COLUMNS[1:], cols[1:]):
        if (not np.array_equal(col.offsets.to_numpy(), offsets)
                or not np.array_equal(col.is_valid().to_numpy(zero_copy_only=False), valid)):
            raise ValueError(f"{name} does not have the frames of {COMPACT_COLUMNS[0]}")
    out = np.empty((len(cols[0].values), num_points, len(COMPONENTS)), dtype=np.float32)
    for i, col in enumerate(cols):
        q = col.values.flatten().to_numpy(zero_copy_only=False)  # int32, or float64 with NaN for nulls
        out[..., i] = (q * scale).reshape(-1, num_points)  # exact: |q| < 2**24, scale a power of two
    out.flags.writeable = False
    return [out[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(valid))]


def table_keypoints(table: pa.Table, num_points: int) -> list[np.ndarray | None]:
    """Per row of a shard table (either storage), the float32 ``[frames, num_points, 4]`` array or ``None``.

    The arrays are read-only (``.copy()`` to modify). ``table`` must keep the file's schema
    metadata (``pyarrow.parquet.read_table`` does, with ``columns=`` or ``filters=`` too).
    """
    if table_storage(table.schema) == "float32":
        return split_keypoints(table.column("keypoints"), num_points)
    return _compact_keypoints(table, num_points)


def read_pose_shard(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray], Skeleton]:
    """Read a shard (``float32`` or ``compact`` storage).

    Returns
    -------
    clips
        One row per clip with every column but the keypoints.
    keypoints
        ``sample_id -> [frames, P, 4]`` float32 for the clips that have keypoints (``ok`` and
        ``no_person``); read-only (``.copy()`` to modify).
    skeleton
        The points' layout.
    """
    skeleton = read_skeleton(path)
    table = pq.read_table(path)
    kps = table_keypoints(table, skeleton.num_points)
    ids = table.column("sample_id").to_pylist()
    clips = _pandas(table.drop_columns(list(KEYPOINT_COLUMNS[table_storage(table.schema)])))
    return clips, {sid: kp for sid, kp in zip(ids, kps) if kp is not None}, skeleton


# --------------------------------------------------------------------------- packing


def _select_points(skeleton: Skeleton, parts: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """Chosen parts (in skeleton order) and the point indices they cover."""
    available = list(skeleton.parts)
    wanted = available if parts is None else list(parts)
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise ValueError(f"parts {unknown} are not in the shards' skeleton (face={skeleton.face!r}); "
                         f"available: {available}")
    chosen = [p for p in available if p in wanted]
    idx = [i for p in chosen for i in range(skeleton.part_slice(p).start, skeleton.part_slice(p).stop)]
    return chosen, np.asarray(idx, dtype=np.int64)


def pack_pose_arrays(shard_paths: Sequence[str | os.PathLike[str]], samples: pd.DataFrame,
                     out_dir: str | os.PathLike[str], parts: Sequence[str] | None = None) -> dict[str, Any]:
    """Concatenate the ``ok`` clips of ``samples`` into one memory-mappable array.

    Writes ``out_dir/keypoints.npy`` (float32 ``[total_frames, P_selected, 4]``),
    ``out_dir/index.parquet`` (:data:`PACK_INDEX_COLUMNS`: a clip's frames are
    ``keypoints[offset:offset + length]``) and, last, ``out_dir/skeleton.json``. Clips are
    ordered by ``split`` then ``sample_id``, so the output depends only on the inputs.

    Parameters
    ----------
    shard_paths
        Pose shards, all with the same skeleton.
    samples
        The subset's samples, with columns ``sample_id, label, split, gloss, signer_id``;
        only these clips are packed (those with status ``ok`` in a shard).
    out_dir
        Output folder (created).
    parts
        Parts to keep (``body``, ``left_hand``, ``right_hand``, ``face``), always in skeleton
        order; ``None`` keeps every part of the shards' skeleton.

    Returns
    -------
    dict
        Counts: ``clips`` packed, ``frames``, ``points``, ``not_ok`` (status -> count of
        samples whose clip was not ``ok``), ``missing`` (samples in no shard).

    Raises
    ------
    ValueError
        Shards with different skeletons, a sample in two shards, missing ``samples``
        columns, unknown parts or nothing to pack.
    """
    need = ["sample_id", "label", "split", "gloss", "signer_id"]
    lacking = [c for c in need if c not in samples.columns]
    if lacking:
        raise ValueError(f"samples table lacks column(s) {lacking}")
    if samples["sample_id"].duplicated().any():
        dup = samples.loc[samples["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise ValueError(f"samples table has duplicate sample_id {dup!r}")
    if not shard_paths:
        raise ValueError("no pose shard given")
    out_dir = Path(out_dir)
    wanted = set(samples["sample_id"].astype(str))

    # Pass 1: statuses and lengths only.
    skeleton: Skeleton | None = None
    where: dict[str, tuple[int, int]] = {}  # sample_id -> (shard number, num_frames)
    status_of: dict[str, str] = {}
    frame_info: dict[str, tuple[int, int, float]] = {}  # sample_id -> (width, height, fps)
    shard_of: dict[str, int] = {}
    for n, path in enumerate(shard_paths):
        sk = read_skeleton(path)
        if skeleton is None:
            skeleton = sk
        elif sk != skeleton:
            raise ValueError(f"{path} has skeleton {sk.to_json()}, the first shard {shard_paths[0]} has "
                             f"{skeleton.to_json()}; pack shards of one extraction only")
        meta = pq.read_table(path, columns=["sample_id", "status", "num_frames", "width", "height", "fps"]).to_pydict()
        for sid, status, nf, w, h, fps in zip(meta["sample_id"], meta["status"], meta["num_frames"], meta["width"],
                                             meta["height"], meta["fps"]):
            if sid not in wanted:
                continue
            if sid in status_of:
                raise ValueError(f"sample {sid!r} is in two shards: {shard_paths[shard_of[sid]]} and {path}")
            status_of[sid] = status
            shard_of[sid] = n
            if status == "ok":
                where[sid] = (n, int(nf))
                frame_info[sid] = (int(w), int(h), float(fps))
    assert skeleton is not None
    chosen, point_idx = _select_points(skeleton, parts)
    settings = [read_pose_settings(path) for path in shard_paths]
    for path, other in zip(shard_paths, settings):
        if other != settings[0]:
            raise ValueError(f"{path} has pose settings {other}, the first shard {shard_paths[0]} has "
                             f"{settings[0]}; pack shards of one extraction only")

    index = samples.loc[samples["sample_id"].astype(str).isin(where), need].copy()
    index["sample_id"] = index["sample_id"].astype(str)
    index = index.sort_values(["split", "sample_id"], kind="stable").reset_index(drop=True)
    index["width"] = np.asarray([frame_info[s][0] for s in index["sample_id"]], dtype=np.int32)
    index["height"] = np.asarray([frame_info[s][1] for s in index["sample_id"]], dtype=np.int32)
    index["fps"] = np.asarray([frame_info[s][2] for s in index["sample_id"]], dtype=np.float32)
    index["length"] = np.asarray([where[s][1] for s in index["sample_id"]], dtype=np.int32)
    index["offset"] = (np.cumsum(index["length"].to_numpy(dtype=np.int64)) - index["length"].to_numpy(dtype=np.int64))
    index = index[list(PACK_INDEX_COLUMNS)]
    total = int(index["length"].sum())
    if index.empty or total == 0:
        raise ValueError(f"nothing to pack: none of the {len(wanted)} samples has an 'ok' clip with frames "
                         f"in {len(shard_paths)} shard(s)")

    marker = out_dir / "skeleton.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    pos = {sid: (int(o), int(n)) for sid, o, n in zip(index["sample_id"], index["offset"], index["length"])}

    # Both files are written to temporaries first; only when both are complete is the marker
    # removed and are they renamed into place, so a failure (disk full, kill) while writing leaves
    # the previous pack whole, and a kill between the renames leaves a pack without its marker.
    with atomic_path(out_dir / "keypoints.npy") as kp_tmp:
        mm = np.lib.format.open_memmap(kp_tmp, mode="w+", dtype=np.float32,
                                       shape=(total, len(point_idx), len(COMPONENTS)))
        for path in shard_paths:
            columns = ["sample_id", *KEYPOINT_COLUMNS[shard_storage(path)]]
            table = pq.read_table(path, columns=columns)
            ids = table.column("sample_id").to_pylist()
            for sid, kp in zip(ids, table_keypoints(table, skeleton.num_points)):
                if sid in pos and kp is not None:
                    off, n = pos[sid]
                    if kp.shape[0] != n:
                        raise ValueError(f"{path}: clip {sid!r} has {kp.shape[0]} keypoint frames, num_frames={n}")
                    mm[off:off + n] = kp[:, point_idx]
        mm.flush()
        del mm
        with atomic_path(out_dir / "index.parquet") as idx_tmp:
            pq.write_table(pa.Table.from_pandas(index, preserve_index=False), idx_tmp, compression="zstd")
            marker.unlink(missing_ok=True)  # the folder is incomplete until skeleton.json is back

    not_ok: dict[str, int] = {}
    for sid, status in status_of.items():
        if status != "ok":
            not_ok[status] = not_ok.get(status, 0) + 1
    summary = {"clips": int(len(index)), "frames": total, "points": int(len(point_idx)),
               "not_ok": dict(sorted(not_ok.items())), "missing": len(wanted - set(status_of))}
    names = skeleton.point_names
    write_json(marker, {
        "skeleton": skeleton.to_dict(),
        "parts": chosen,
        "point_names": [names[i] for i in point_idx],
        "point_indices": point_idx.tolist(),
        "components": list(COMPONENTS),
        "shape": [total, int(len(point_idx)), len(COMPONENTS)],
        "dtype": "float32",
        "num_clips": int(len(index)),
        "recording": recording_record(settings[0], index),
    })
    return summary


def recording_record(pose_settings: Mapping[str, Any], index: pd.DataFrame) -> dict[str, Any]:
    """How the packed keypoints were recorded, for the models trained on them (``recording`` in ``skeleton.json``).

    ``pose_settings`` are the shards' keypoint settings (frame step, Holistic thresholds);
    ``keypoint_fps`` is the median keypoint rate of the packed clips (video fps / frame step)
    and ``clip_seconds`` their median duration, so that inference can sample a video's frames
    at the rate training saw and a stream's window can span what a training clip spans.
    """
    fps = index["fps"].to_numpy(dtype=np.float64)
    seconds = index["length"].to_numpy(dtype=np.float64) / np.where(fps > 0, fps, np.nan)
    ok = np.isfinite(fps) & (fps > 0)
    return {"pose_settings": dict(pose_settings),
            "keypoint_fps": round(float(np.median(fps[ok])), 6) if ok.any() else None,
            "clip_seconds": round(float(np.nanmedian(seconds[ok])), 6) if ok.any() else None}


def load_packed(out_dir: str | os.PathLike[str]) -> tuple[np.memmap, pd.DataFrame, dict[str, Any]]:
    """Open a folder written by :func:`pack_pose_arrays`.

    Returns
    -------
    keypoints
        Read-only memory map ``[total_frames, P_selected, 4]``.
    index
        :data:`PACK_INDEX_COLUMNS`; clip ``i`` is ``keypoints[offset:offset + length]``.
    meta
        The contents of ``skeleton.json`` (``parts``, ``point_names``, ``skeleton``, ...).

    Raises
    ------
    FileNotFoundError
        The folder has no ``skeleton.json`` (packing never finished).
    ValueError
        The array does not match the metadata or the index.
    """
    out_dir = Path(out_dir)
    marker = out_dir / "skeleton.json"
    if not marker.is_file():
        raise FileNotFoundError(f"{marker} is missing: {out_dir} is not a finished pose pack; rerun the packing")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    keypoints = np.load(out_dir / "keypoints.npy", mmap_mode="r")
    index = pd.read_parquet(out_dir / "index.parquet")
    if list(keypoints.shape) != list(meta["shape"]):
        raise ValueError(f"{out_dir / 'keypoints.npy'} has shape {list(keypoints.shape)}, "
                         f"skeleton.json says {meta['shape']}")
    end = int((index["offset"] + index["length"]).max()) if len(index) else 0
    if len(index) != meta["num_clips"] or end > keypoints.shape[0]:
        raise ValueError(f"{out_dir / 'index.parquet'} does not match {out_dir / 'keypoints.npy'}")
    return keypoints, index, meta


__all__ = ["COMPACT_COLUMNS", "COMPACT_SCALE", "COMPACT_ZSTD_LEVEL", "ClipPose", "KEYPOINT_COLUMNS",
           "KEYPOINT_STORAGES", "PACK_INDEX_COLUMNS", "SHARD_COLUMNS", "STORAGE_KEY", "check_storage",
           "compact_table", "convert_pose_shard", "convert_table", "float32_table", "load_packed",
           "pack_pose_arrays", "recording_record", "read_pose_settings", "read_pose_shard", "read_skeleton", "records_to_table",
           "shard_schema", "shard_storage", "split_keypoints", "table_keypoints", "table_storage",
           "write_pose_shard", "write_table"]
