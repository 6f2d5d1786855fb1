"""The canonical manifest: one row per annotated clip, whatever dataset it came from.

Conventions (read these before using the columns):

* **Temporal crop.** ``start_frame``/``end_frame`` are 0-based and half-open,
  ``[start_frame, end_frame)``, counted at ``annotated_fps``; ``start_s``/``end_s`` are the
  same crop in seconds of the source video's timeline. A null ``end_frame``/``end_s`` means
  "to the end of the video" (WLASL's ``frame_end == -1``). WLASL's 1-based
  ``frame_start``/``frame_end`` become ``start_frame = frame_start - 1`` and
  ``end_frame = frame_end``; its frame numbers assume 25 fps decoding whatever the real
  frame rate is. MS-ASL's ``start``/``end`` frames are kept as given and its
  ``start_time``/``end_time`` give the seconds (they are authoritative, the MS-ASL README says).
* **Box.** Always ``[xmin, ymin, xmax, ymax]`` order in ``box_xmin``...``box_ymax``;
  ``box_units`` says ``"pixel"`` (WLASL: pixels of the original video, whose size is only
  known once downloaded) or ``"normalized"`` (MS-ASL: fractions of width and height,
  converted from MS-ASL's ``[ymin, xmin, ymax, xmax]``). Null when the annotation has none.
* **Labels.** ``label`` is the dataset-wide class index: the gloss's position in the
  WLASL v0.3 JSON (= ``wlasl_class_list.txt``), or MS-ASL's ``label``
  (= index in ``MSASL_classes.json``). Subsets (:mod:`sldata.subsets`) re-index.
* **Ids.** ``sample_id`` is unique across datasets and safe as a file name:
  ``wlasl-<video_id>`` or ``msasl-<12 hex digits>`` (a hash of the MS-ASL row's URL, times,
  label and signer, so it survives re-ordering of the file).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    # name, type, nullable, description
    ("sample_id", pa.string(), False, "Unique, file-name-safe clip id: 'wlasl-<video_id>' or 'msasl-<hash12>'."),
    ("dataset", pa.string(), False, "'wlasl' or 'msasl'."),
    ("original_id", pa.string(), False, "The dataset's own id: WLASL video_id; MS-ASL '<split>/<row index>'."),
    ("source_key", pa.string(), False, "Identity of the source video ('youtube-<id>' or 'url-<sha16>'): downloaded once, used as its file name."),
    ("url", pa.string(), False, "Normalized http(s) URL of the source video."),
    ("source_site", pa.string(), False, "WLASL 'source' field, else the URL host ('youtube' for all YouTube hosts)."),
    ("gloss", pa.string(), False, "Canonical gloss of the class (WLASL JSON gloss; MS-ASL class name)."),
    ("label", pa.int32(), False, "Dataset-wide class index (see module docs)."),
    ("annotated_text", pa.string(), True, "The text the annotator wrote (MS-ASL 'text', may be a synonym); WLASL: the gloss."),
    ("split", pa.string(), False, "Official split: 'train', 'val' or 'test'."),
    ("signer_id", pa.int32(), True, "Signer id as annotated; null when absent."),
    ("variation_id", pa.int32(), True, "WLASL sign variation id; null for MS-ASL."),
    ("annotated_fps", pa.float64(), False, "Frame rate the frame numbers refer to (WLASL: always 25)."),
    ("start_frame", pa.int64(), False, "0-based first frame of the crop at annotated_fps."),
    ("end_frame", pa.int64(), True, "0-based exclusive end frame at annotated_fps; null = to the end."),
    ("start_s", pa.float64(), False, "Crop start in seconds."),
    ("end_s", pa.float64(), True, "Crop end in seconds (exclusive); null = to the end."),
    ("box_xmin", pa.float64(), True, "Signer box, left."),
    ("box_ymin", pa.float64(), True, "Signer box, top."),
    ("box_xmax", pa.float64(), True, "Signer box, right."),
    ("box_ymax", pa.float64(), True, "Signer box, bottom."),
    ("box_units", pa.string(), True, "'pixel' or 'normalized'; null when there is no box."),
    ("annotated_width", pa.float64(), True, "Frame width the annotation was made on (MS-ASL); null if unknown."),
    ("annotated_height", pa.float64(), True, "Frame height the annotation was made on (MS-ASL); null if unknown."),
    ("source_file", pa.string(), False, "Annotation file this row was read from."),
    ("source_row", pa.string(), False, "Position of the row in that file, e.g. '[3].instances[7]'."),
]

SCHEMA = pa.schema(
    [pa.field(name, dtype, nullable=nullable, metadata={"description": doc}) for name, dtype, nullable, doc in COLUMNS]
)

REJECT_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "'wlasl' or 'msasl'."),
    ("file", "Annotation file of the rejected row."),
    ("row", "Position of the row in the file."),
    ("field", "Offending field ('' when the whole row is at fault)."),
    ("reason", "Reason code (sldata.annotations.rejects.Reason)."),
    ("detail", "What was found and what was expected."),
    ("record", "The offending record as JSON, cut to 500 characters."),
]

REJECT_SCHEMA = pa.schema(
    [pa.field(name, pa.string(), nullable=False, metadata={"description": doc}) for name, doc in REJECT_COLUMNS]
)


def describe_schema() -> str:
    """A Markdown table of the manifest columns, for the README and ``sldata describe-manifest``."""
    lines = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
    for name, dtype, nullable, doc in COLUMNS:
        lines.append(f"| `{name}` | {dtype} | {'yes' if nullable else 'no'} | {doc} |")
    return "\n".join(lines)
