"""The model card written next to an exported model (``MODEL_CARD.md`` in the version folder).

:func:`model_card` turns what an export knows into Markdown for people deciding whether to use
the model: what it is and its input, the data it was trained on and that data's licence, the
evaluation with each split's **coverage** (clips evaluated of those annotated: a split whose
videos could not be acquired says so instead of reporting a number), the export's parity check,
the intended use (isolated signs) and the limitations. :func:`write_model_card` writes it
atomically. Everything comes from the export metadata (``sltrain.json``), the parity report and,
when given, the evaluation stage's ``metrics.json``; nothing is made up when a part is missing:
the card says it was not supplied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sldata.atomic import atomic_open

CARD_FILE = "MODEL_CARD.md"

DATA_LICENCES: dict[str, tuple[str, str]] = {
    "wlasl": ("WLASL (Li et al., WACV 2020)",
              "Computational Use of Data Agreement (C-UDA): research and non-commercial use only; the videos "
              "remain their owners' (https://dxli94.github.io/WLASL/)"),
    "msasl": ("MS-ASL (Joze and Koller, BMVC 2019)",
              "Microsoft Research licence for MS-ASL: research use only "
              "(https://www.microsoft.com/en-us/research/project/ms-asl/)"),
}
"""Dataset name -> (citation, licence summary)."""

SPLITS = ("val", "test")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.1f}%"


def _ci(value: Any) -> str:
    if not value or any(v is None for v in value):
        return "n/a"
    return f"{100.0 * float(value[0]):.1f}-{100.0 * float(value[1]):.1f}%"


def _evaluation_section(evaluation: Mapping[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["No evaluation was supplied with this export (the pipeline's `export` stage passes the "
                "`evaluate` stage's `metrics.json` with `--eval-metrics`)."]
    lines = ["| split | clips evaluated / annotated (coverage) | top-1 (95% CI) | top-5 | mean per-class top-1 |",
             "|---|---|---|---|---|"]
    notes = []
    for split in SPLITS:
        m = evaluation.get(split)
        if not isinstance(m, Mapping):
            continue
        cover = f"{m.get('clips_evaluated', 0)} / {m.get('clips_annotated', '?')} ({_pct(m.get('coverage'))})"
        if not m.get("clips_evaluated"):
            lines.append(f"| {split} | {cover} | not measured | | |")
            notes.append(f"The {split} split has no evaluated clips (its videos could not be acquired), so there is "
                         f"no {split} number.")
            continue
        lines.append(f"| {split} | {cover} | {_pct(m.get('per_instance_top1'))} ({_ci(m.get('top1_ci95'))}) | "
                     f"{_pct(m.get('per_instance_top5'))} | {_pct(m.get('mean_per_class_top1'))} |")
    if len(lines) == 2:
        return ["The evaluation supplied has no val or test split."]
    notes.append("The val split also chose the training epoch (model selection), so val numbers are optimistic.")
    return lines + [""] + notes


def model_card(metadata: Mapping[str, Any], parity: Mapping[str, Any] | None = None,
               evaluation: Mapping[str, Any] | None = None) -> str:
    """The card's Markdown for an export's ``metadata`` (``sltrain.json``), ``parity`` report and ``evaluation``
    (the evaluation stage's combined ``metrics.json``; ``None`` when not supplied)."""
    label_map = metadata.get("label_map", {})
    glosses = [str(g) for g in label_map.get("classes") or label_map.get("glosses") or []]
    dataset = str(label_map.get("dataset", "unknown"))
    citation, licence = DATA_LICENCES.get(dataset, (dataset, "unknown: check the data's own terms before any use"))
    spec = metadata.get("input_spec", {})
    model = metadata.get("model", {})
    inputs = metadata.get("inputs", {}).get("pose", {})
    k = label_map.get("k")
    subset = f"{dataset.upper()}-{k}" if k else f"{len(glosses)} chosen glosses of {dataset.upper()}"
    params = metadata.get("params", {})
    train = params.get("train", {}) if isinstance(params, Mapping) else {}
    name, version = metadata.get("name", "?"), metadata.get("version", "?")
    out = [f"# Model card: {name} version {version}", "",
           f"An isolated sign recogniser: one video of one sign in, the {min(5, len(glosses))} most probable of "
           f"{len(glosses)} American Sign Language glosses out. Exported by `python -m sltrain export` "
           f"(sltrain {metadata.get('versions', {}).get('sltrain', '?')}) from the checkpoint with sha256 "
           f"`{metadata.get('checkpoint_sha256', '?')}`.", "",
           "## Model", "",
           f"- Architecture: `{model.get('name', '?')}` ({', '.join(f'{k}={v}' for k, v in model.get('config', {}).items())}),"
           f" heads: {', '.join(model.get('heads', {})) or 'gloss'}; best epoch {metadata.get('epoch', '?')}"
           + (f" of at most {train['epochs']}" if "epochs" in train else "") + ".",
           f"- Input: Holistic keypoints ({(spec.get('skeleton') or {}).get('estimator', 'mediapipe')}"
           f" {(spec.get('skeleton') or {}).get('estimator_version', '')}) of up to {spec.get('num_frames', '?')}"
           f" frames, tensor `pose` {inputs.get('shape', '?')} and `mask`; the video's own pose estimation runs "
           "inside `predict`, `stream` and `serve`.",
           f"- Files: `model.xml` + `model.bin` (OpenVINO IR, {metadata.get('precision', '?')} weights), `model.onnx`,"
           " `sltrain.json` (label map, input spec, params), `parity.json`.", "",
           "## Data", "",
           f"- Trained on the train split of {subset} from {citation}; model selection on its val split; the test "
           "split is read only by the evaluation stage.",
           f"- Data licence: {licence}. The weights are derived from that data: use them under the same terms.",
           f"- Glosses ({len(glosses)}): {', '.join(glosses[:100])}{' ...' if len(glosses) > 100 else ''}.", "",
           "## Evaluation", ""]
    out += _evaluation_section(evaluation)
    out += ["", "## Export parity", ""]
    backends = (parity or {}).get("backends", {})
    if backends:
        source = {"given": "real val", "synthetic": "synthetic"}.get(str((parity or {}).get("inputs")), "")
        out.append(f"PyTorch against each runtime on {(parity or {}).get('num_clips', '?')} {source} clips:")
        out.append("")
        for backend, r in backends.items():
            out.append(f"- {backend} ({r.get('runtime', '')}): largest logit difference {r.get('max_abs_diff', 0):.3g},"
                       f" top-1 agreement {_pct(r.get('top1_agreement'))}.")
    else:
        out.append("No parity report was supplied.")
    out += ["", "## Intended use", "",
            "- Recognising one **isolated** sign per clip, from the glosses listed above: research, teaching and "
            "prototyping of sign language tools.",
            "- Not for continuous signing or translation (windows that straddle two signs give guesses; `stream` "
            "slides a window over longer video for exploration only), not for signs outside the vocabulary (the "
            "model always answers one of its glosses), and not for decisions about people.", "",
            "## Limitations", "",
            "- The training clips come from a few hundred signers and web videos; accuracy on other signers, "
            "cameras, lighting, framing or sign variants is not measured here and may be much lower.",
            "- The model sees only keypoints: when the pose estimator loses the hands (fast motion, blur, occlusion), "
            "the answer degrades; a video with no person in view is refused.",
            "- Scores are softmax probabilities over the known glosses, not calibrated confidences.", ""]
    return "\n".join(out)


def write_model_card(folder: str | os.PathLike[str], metadata: Mapping[str, Any],
                     parity: Mapping[str, Any] | None = None, evaluation: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`model_card` to ``folder/MODEL_CARD.md`` (atomically); returns its path."""
    path = Path(folder) / CARD_FILE
    with atomic_open(path, encoding="utf-8") as fh:
        fh.write(model_card(metadata, parity, evaluation))
    return path
