// cxrad web page: upload a film, show the record from POST /v1/predict. No external resources.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

function authHeaders() {
  const t = $("token").value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }
function words(name) { return name.replace(/_/g, " ").toLowerCase(); }

async function loadModel() {
  const r = await fetch("/v1/model", { headers: authHeaders() });
  if (r.status === 401) { $("token-box").open = true; return; }
  if (!r.ok) return;
  model = await r.json();
  $("model-name").textContent = "· model " + model.name;
}

function setMessage(text, isError) {
  $("message").textContent = text;
  $("message").classList.toggle("error", !!isError);
}

// The record may use the new schema (probabilities + findings list + normal/triage) or the old
// one (findings as {class: probability} + positive + abnormal_score); read both.
function normalise(rec) {
  const newSchema = Array.isArray(rec.findings);
  const probs = rec.probabilities || (newSchema ? {} : rec.findings || {});
  const thresholds = Object.assign({}, model ? model.thresholds : {});
  let positive = rec.positive || [];
  if (newSchema) {
    positive = rec.findings.map((f) => f["class"]);
    rec.findings.forEach((f) => { if (f.threshold != null) thresholds[f["class"]] = f.threshold; });
  }
  let normal = rec.normal;
  if (normal === undefined || normal === null) {
    normal = positive.filter((c) => c !== "NORMAL").length === 0;
  }
  const score = rec.triage ? rec.triage.score : rec.abnormal_score;
  const cut = rec.triage ? rec.triage.threshold : null;
  const rows = Object.keys(probs).map((c) => ({
    cls: c, p: probs[c], t: thresholds[c], positive: positive.includes(c),
  }));
  rows.sort((a, b) => b.p - a.p);
  return { rows, normal, score, cut, heatmaps: rec.heatmaps || {} };
}

function warningsFor(rec) {
  const out = [];
  if (rec.gate && rec.gate.passed === false) {
    out.push("The input check did not accept this image" +
      (rec.gate.code ? " (" + words(rec.gate.code) + ")" : "") +
      ": it may not be a frontal chest X-ray, so any result would be unreliable.");
  }
  if (rec.ood && rec.ood.unlike_training) {
    out.push("This film looks unlike the films the model was trained on; " +
      "treat the findings with extra caution.");
  }
  return out;
}

function showWarnings(list) {
  const box = $("warnings");
  box.replaceChildren(...list.map((w) => { const p = document.createElement("p"); p.textContent = w; return p; }));
  box.hidden = list.length === 0;
}

function clearResult() {
  showWarnings([]);
  $("triage").hidden = true;
  $("viewer").hidden = true;
  $("findings-box").hidden = true;
  $("findings").replaceChildren();
  $("overlay").hidden = true;
  $("overlay").removeAttribute("src");
}

function showOverlay(cls, url, button) {
  const ov = $("overlay");
  const on = button.getAttribute("aria-pressed") !== "true";
  document.querySelectorAll("button.toggle").forEach((b) => b.setAttribute("aria-pressed", "false"));
  if (on) {
    ov.src = url;
    ov.alt = "Heatmap for " + words(cls);
    ov.hidden = false;
    button.setAttribute("aria-pressed", "true");
    $("caption").textContent = "Heatmap: where the model looked for " + words(cls) + ".";
  } else {
    ov.hidden = true;
    $("caption").textContent = "The film as the model saw it (letterboxed to a square).";
  }
}

function findingRow(row, heatmap) {
  const li = document.createElement("li");
  li.className = "finding" + (row.positive ? " positive" : "");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = words(row.cls);
  if (row.positive) name.title = "over its threshold";
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", words(row.cls) + ": probability " + pct(row.p) +
    (row.t != null ? ", threshold " + pct(row.t) : ""));
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.width = pct(row.p);
  bar.append(fill);
  if (row.t != null) {
    const mark = document.createElement("span");
    mark.className = "threshold";
    mark.style.left = "calc(" + pct(row.t) + " - 1px)";
    mark.title = "threshold " + pct(row.t);
    bar.append(mark);
  }
  const prob = document.createElement("span");
  prob.className = "prob";
  prob.textContent = pct(row.p);
  if (row.positive) { const s = document.createElement("span"); s.className = "sr-only"; s.textContent = " (over threshold)"; name.append(s); }
  li.append(name, bar, prob);
  const cell = document.createElement("span");
  if (heatmap) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "toggle";
    b.textContent = "Heatmap";
    b.setAttribute("aria-pressed", "false");
    b.setAttribute("aria-label", "Show heatmap for " + words(row.cls));
    b.addEventListener("click", () => showOverlay(row.cls, heatmap, b));
    cell.append(b);
  }
  li.append(cell);
  return li;
}

function showRecord(rec) {
  if (rec.preview) {
    $("film").src = rec.preview;
    $("viewer").hidden = false;
  }
  if (rec.status !== "ok") {
    const why = rec.reason || rec.status;
    setMessage("This image was not accepted: " + why + (rec.code ? " (" + rec.code + ")" : ""), true);
    showWarnings(warningsFor(rec));
    return;
  }
  const n = normalise(rec);
  setMessage("Done: " + (rec.image || rec.path || "film") + ".", false);
  showWarnings(warningsFor(rec));
  const tri = $("triage");
  tri.className = "triage " + (n.normal ? "normal" : "abnormal");
  tri.textContent = (n.normal ? "Triage: no finding over its threshold" : "Triage: abnormal") +
    (n.score != null ? " (abnormality score " + n.score.toFixed(2) +
      (n.cut != null ? ", cut-off " + n.cut.toFixed(2) : "") + ")" : "");
  tri.hidden = false;
  $("findings").replaceChildren(...n.rows.map((r) => findingRow(r, n.heatmaps[r.cls])));
  $("findings-box").hidden = false;
}

async function send(file) {
  clearResult();
  $("result").setAttribute("aria-busy", "true");
  setMessage("Reading " + file.name + "…", false);
  const form = new FormData();
  form.append("file", file, file.name);
  const q = "?preview=true" + ($("want-heatmaps").checked ? "&heatmaps=true" : "");
  try {
    const r = await fetch("/v1/predict" + q, { method: "POST", body: form, headers: authHeaders() });
    const body = await r.json().catch(() => ({ code: "bad_response", message: "the server sent no JSON" }));
    if (!r.ok) {
      setMessage("Could not read this file: " + body.message + " (" + body.code + ")", true);
      if (r.status === 401) $("token-box").open = true;
      return;
    }
    if (!model) await loadModel();
    showRecord(body);
  } catch (e) {
    setMessage("The server could not be reached: " + e, true);
  } finally {
    $("result").setAttribute("aria-busy", "false");
  }
}

function init() {
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) send(e.target.files[0]); });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
  });
  $("opacity").addEventListener("input", (e) => {
    $("overlay").style.opacity = e.target.value / 100;
    $("opacity-value").textContent = e.target.value + "%";
  });
  $("overlay").style.opacity = $("opacity").value / 100;
  $("token").addEventListener("change", loadModel);
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
