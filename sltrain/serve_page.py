"""The web page ``serve`` answers at ``GET /``: upload or record a video, see the top-5 glosses.

One self-contained HTML document (inline CSS and JavaScript, no external resources, so it works
offline and under a strict ``Content-Security-Policy``). It posts the chosen file, or a webcam
recording made with the browser's ``MediaRecorder``, to ``POST /predict`` as
``multipart/form-data`` (field ``video``) and shows the answer: a table of the top-5 glosses with
their scores, or the service's error code and reason.

For scripts and tests the page exposes its state: ``#status`` carries ``data-state`` = ``idle``,
``busy``, ``done`` or ``error``, and each result row ``data-gloss`` and ``data-score``.
"""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign recognizer: __NAME__</title>
<style>
  body { font: 16px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
  .muted { color: #5f6368; }
  section { border: 1px solid #dadce0; border-radius: 8px; padding: .4rem 1rem 1rem; margin-top: 1rem; }
  button { font: inherit; padding: .35rem .9rem; border-radius: 6px; border: 1px solid #1a73e8; background: #1a73e8;
           color: white; cursor: pointer; }
  button:disabled { background: #dadce0; border-color: #dadce0; color: #5f6368; cursor: default; }
  video { width: 100%; max-height: 16rem; background: #202124; border-radius: 6px; margin-top: .5rem; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eee; }
  td.score { font-variant-numeric: tabular-nums; width: 5rem; }
  .bar { height: .7rem; background: #1a73e8; border-radius: 3px; }
  #status[data-state=error] { color: #c5221f; }
</style>
</head>
<body>
<h1>Isolated sign recognition</h1>
<p class="muted">Model <strong id="model">__NAME__</strong> version __VERSION__, __CLASSES__ glosses. One sign
per video, up to __MAX_SECONDS__ s and __MAX_MB__ MB; the signer's upper body and hands in view.</p>

<section>
  <h2>Upload a video</h2>
  <form id="upload">
    <input type="file" id="file" name="video" accept="video/*">
    <button type="submit" id="send">Recognize</button>
  </form>
</section>

<section>
  <h2>Or record one with your webcam</h2>
  <button type="button" id="record">Start camera and record</button>
  <button type="button" id="stop" disabled>Stop and recognize</button>
  <span id="camera-note" class="muted"></span>
  <video id="preview" muted playsinline hidden></video>
</section>

<section aria-live="polite">
  <h2>Result</h2>
  <p id="status" data-state="idle">No video yet.</p>
  <table id="result" hidden>
    <thead><tr><th>#</th><th>gloss</th><th>score</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
</section>

<script>
"use strict";
const LIMITS = __LIMITS__;
const statusEl = document.getElementById("status");
const table = document.getElementById("result");

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function showTop(answer) {
  const body = table.tBodies[0];
  body.replaceChildren();
  answer.top.forEach((t, i) => {
    const row = body.insertRow();
    row.dataset.gloss = t.gloss;
    row.dataset.score = String(t.score);
    row.insertCell().textContent = String(i + 1);
    row.insertCell().textContent = t.gloss;
    const score = row.insertCell();
    score.className = "score";
    score.textContent = t.score.toFixed(3);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = Math.max(1, Math.round(100 * t.score)) + "%";
    row.insertCell().appendChild(bar);
  });
  table.hidden = false;
  const secs = answer.timings && answer.timings.total ? ` in ${answer.timings.total.toFixed(1)} s` : "";
  setStatus("done", `Recognized ${answer.num_frames} frames${secs}: ${answer.top[0].gloss}`);
}

async function recognize(blob, filename) {
  if (blob.size > LIMITS.max_bytes) {
    table.hidden = true;
    setStatus("error", `too_large: ${blob.size} bytes, the limit is ${LIMITS.max_bytes}`);
    return;
  }
  const form = new FormData();
  form.append("video", blob, filename);
  table.hidden = true;
  setStatus("busy", `Recognizing ${filename} (${Math.round(blob.size / 1024)} KB)...`);
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json();
    if (response.ok) {
      showTop(answer);
    } else {
      setStatus("error", `${answer.error}: ${answer.detail}`);
    }
  } catch (err) {
    setStatus("error", `request failed: ${err}`);
  }
}

document.getElementById("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  if (!file) {
    setStatus("error", "choose a video file first");
    return;
  }
  recognize(file, file.name);
});

const recordButton = document.getElementById("record");
const stopButton = document.getElementById("stop");
const preview = document.getElementById("preview");
const note = document.getElementById("camera-note");
let recorder = null;
let chunks = [];
let timer = null;

if (!(navigator.mediaDevices && window.MediaRecorder)) {
  recordButton.disabled = true;
  note.textContent = "The camera needs a browser with MediaRecorder, on localhost or https.";
}

recordButton.addEventListener("click", async () => {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    setStatus("error", `camera: ${err.name}: ${err.message}`);
    return;
  }
  preview.srcObject = stream;
  preview.hidden = false;
  await preview.play().catch(() => {});
  chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    clearTimeout(timer);
    stream.getTracks().forEach((t) => t.stop());
    preview.hidden = true;
    recordButton.disabled = false;
    stopButton.disabled = true;
    note.textContent = "";
    const type = (recorder.mimeType || "video/webm").split(";")[0];
    recognize(new Blob(chunks, { type }), type.includes("mp4") ? "webcam.mp4" : "webcam.webm");
  };
  recorder.start(250);
  recordButton.disabled = true;
  stopButton.disabled = false;
  note.textContent = `Recording: sign, then stop (at most ${LIMITS.max_seconds} s).`;
  timer = setTimeout(() => recorder.state !== "inactive" && recorder.stop(), 1000 * LIMITS.max_seconds);
});

stopButton.addEventListener("click", () => {
  if (recorder && recorder.state !== "inactive") recorder.stop();
});
</script>
</body>
</html>
"""


def render_page(name: str, version: int | None, classes: int, max_bytes: int, max_seconds: float) -> str:
    """The page for a model (``name``, ``version``, number of ``classes``) and the service's limits."""
    limits = json.dumps({"max_bytes": int(max_bytes), "max_seconds": float(max_seconds)})
    return (_PAGE.replace("__NAME__", html.escape(str(name)))
            .replace("__VERSION__", html.escape(str(version if version is not None else "?")))
            .replace("__CLASSES__", str(int(classes)))
            .replace("__MAX_SECONDS__", f"{float(max_seconds):g}")
            .replace("__MAX_MB__", f"{max_bytes / 1e6:.0f}")
            .replace("__LIMITS__", limits))
