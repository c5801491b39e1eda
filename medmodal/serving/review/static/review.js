// medmodal case review: worklist, case view, reader rating form. Plain JS, no external files.
"use strict";

const state = { studies: [], current: null, keyHeader: "X-API-Key" };
const $ = (sel) => document.querySelector(sel);

// --------------------------------------------------------------- API helpers
function apiKey() { return sessionStorage.getItem("medmodal-api-key"); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey()) headers[state.keyHeader] = apiKey();
  let response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const key = window.prompt("This server needs an API key:");
    if (key) {
      sessionStorage.setItem("medmodal-api-key", key);
      return api(path, options);
    }
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response;
}
const getJSON = async (path) => (await api(path)).json();

async function loadImage(path) {
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  const img = new Image();
  await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = url; });
  return img;
}

function text(el, value) { el.textContent = value == null ? "" : String(value); return el; }
function make(tag, value, cls) { const el = document.createElement(tag); if (cls) el.className = cls; return text(el, value); }

// ----------------------------------------------------------------- worklist
async function showWorklist() {
  $("#case-view").hidden = true;
  $("#worklist-view").hidden = false;
  const data = await getJSON("/v1/review/studies");
  state.studies = data.studies;
  text($("#model-name"), `model: ${data.model} · split: ${data.split}`);
  text($("#worklist-count"), `(${data.studies.length} studies)`);
  const body = $("#worklist tbody");
  body.replaceChildren();
  for (const study of data.studies) {
    const row = document.createElement("tr");
    row.dataset.study = study.id;
    const link = make("a", study.id, "case-link");
    link.href = `#/case/${encodeURIComponent(study.id)}`;
    const first = document.createElement("td");
    first.appendChild(link);
    row.append(first, make("td", study.site), make("td", study.reference_labels.join(", ") || "none"),
               make("td", study.n_ratings));
    body.appendChild(row);
  }
}

// --------------------------------------------------------------------- case
async function showCase(id) {
  $("#worklist-view").hidden = true;
  $("#case-view").hidden = false;
  text($("#case-id"), id);
  text($("#rating-status"), "loading…");
  if (!state.studies.length) state.studies = (await getJSON("/v1/review/studies")).studies;
  const data = await getJSON(`/v1/review/studies/${encodeURIComponent(id)}`);
  state.current = data;
  text($("#case-site"), data.site);
  renderPredictions(data);
  renderWordAttention(data.prediction.word_attention || [], data.input_text);
  text($("#generated-report"), data.prediction.report || "(this model does not generate reports)");
  text($("#reference-report"), data.reference_report || "(none)");
  renderErrorTypes(data.error_types);
  renderRatings(data.ratings);
  $("#rating-form").reset();
  prefillOwnRating(data.ratings);
  text($("#rating-status"), "");
  await renderImage(data);
}

function renderPredictions(data) {
  const body = $("#predictions tbody");
  body.replaceChildren();
  const predicted = new Set(data.prediction.predicted);
  const reference = new Set(data.reference_labels);
  for (const [label, p] of Object.entries(data.prediction.labels)) {
    const row = document.createElement("tr");
    if (predicted.has(label)) row.className = "predicted";
    row.dataset.label = label;
    row.append(make("td", label), make("td", p.toFixed(3)), make("td", reference.has(label) ? "yes" : ""));
    body.appendChild(row);
  }
}

function renderWordAttention(tokens, inputText) {
  const box = $("#word-attention");
  box.replaceChildren();
  if (!tokens.length) { text(box, Object.values(inputText || {}).join(" / ") || "(no input text)"); return; }
  const peak = Math.max(...tokens.map((t) => t.weight), 1e-9);
  for (const t of tokens) {
    const span = make("span", t.token);
    span.style.background = `rgba(255, 200, 0, ${(t.weight / peak).toFixed(3)})`;
    span.title = `attention ${t.weight.toFixed(4)}`;
    box.append(span, " ");
  }
}

async function renderImage(data) {
  const canvas = $("#image-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const id = encodeURIComponent(data.id);
  let image, saliency = null;
  try { image = await loadImage(`/v1/review/studies/${id}/image.png`); }
  catch (e) { ctx.fillStyle = "#fff"; ctx.fillText("no image", 10, 20); return; }
  try { saliency = await loadImage(`/v1/review/studies/${id}/saliency.png`); } catch (e) { saliency = null; }
  const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
  const w = image.width * scale, h = image.height * scale;
  ctx.drawImage(image, 0, 0, w, h);
  if (saliency && $("#show-saliency").checked) ctx.drawImage(saliency, 0, 0, w, h);
  const drawBoxes = (boxes, colour, dash) => {
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = 2; ctx.setLineDash(dash);
    ctx.font = "12px sans-serif";
    for (const b of boxes) {
      const [x0, y0, x1, y1] = b.box.map((v) => v * scale);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.fillText(b.label, x0 + 2, Math.max(12, y0 - 3));
    }
  };
  if ($("#show-boxes").checked) drawBoxes(data.prediction.boxes || [], "#00e5ff", []);
  if ($("#show-reference-boxes").checked) drawBoxes(data.reference_boxes || [], "#7fff00", [5, 4]);
  ctx.setLineDash([]);
}

function renderErrorTypes(types) {
  const box = $("#error-types");
  box.querySelectorAll("label").forEach((el) => el.remove());
  for (const type of types) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox"; input.name = "errors"; input.value = type; input.id = `error-${type}`;
    label.append(input, " " + type.replace(/_/g, " "));
    box.appendChild(label);
  }
}

function renderRatings(ratings) {
  const list = $("#case-ratings");
  list.replaceChildren();
  for (const r of ratings) {
    const errors = ["missed_finding", "false_finding", "wrong_laterality", "wrong_severity"].filter((k) => r[k]);
    list.appendChild(make("li", `${r.reader}: ${r.acceptable ? "acceptable" : "not acceptable"}` +
      (errors.length ? ` (${errors.join(", ")})` : "") + (r.comment ? ` — ${r.comment}` : "")));
  }
}

function prefillOwnRating(ratings) {
  const reader = $("#reader").value.trim();
  const mine = ratings.find((r) => r.reader === reader);
  if (!mine) return;
  $(mine.acceptable ? "#acceptable-yes" : "#acceptable-no").checked = true;
  for (const box of document.querySelectorAll("input[name=errors]")) box.checked = Boolean(mine[box.value]);
  $("#comment").value = mine.comment || "";
}

async function submitRating(event) {
  event.preventDefault();
  const status = $("#rating-status");
  const reader = $("#reader").value.trim();
  if (!reader) { status.className = "error"; text(status, "enter your reader name at the top first"); return; }
  const choice = document.querySelector("input[name=acceptable]:checked");
  if (!choice) { status.className = "error"; text(status, "choose acceptable yes or no"); return; }
  const body = {
    study_id: state.current.id,
    reader,
    acceptable: choice.value === "yes",
    errors: [...document.querySelectorAll("input[name=errors]:checked")].map((el) => el.value),
    comment: $("#comment").value,
  };
  try {
    await api("/v1/review/ratings", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
    status.className = "ok";
    text(status, "saved");
    renderRatings((await getJSON(`/v1/review/studies/${encodeURIComponent(state.current.id)}`)).ratings);
  } catch (e) {
    status.className = "error";
    text(status, `not saved: ${e.message}`);
  }
}

function step(offset) {
  if (!state.current) return;
  const ids = state.studies.map((s) => s.id);
  const next = ids[ids.indexOf(state.current.id) + offset];
  if (next !== undefined) location.hash = `#/case/${encodeURIComponent(next)}`;
}

// ------------------------------------------------------------------- routing
async function route() {
  const match = location.hash.match(/^#\/case\/(.+)$/);
  try {
    if (match) await showCase(decodeURIComponent(match[1]));
    else await showWorklist();
  } catch (e) {
    const status = $("#rating-status");
    status.className = "error";
    text(status, e.message);
    console.error(e);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#reader").value = localStorage.getItem("medmodal-reader") || "";
  $("#reader").addEventListener("change", () => localStorage.setItem("medmodal-reader", $("#reader").value.trim()));
  $("#rating-form").addEventListener("submit", submitRating);
  $("#prev-case").addEventListener("click", () => step(-1));
  $("#next-case").addEventListener("click", () => step(1));
  for (const id of ["#show-saliency", "#show-boxes", "#show-reference-boxes"]) {
    $(id).addEventListener("change", () => state.current && renderImage(state.current));
  }
  window.addEventListener("hashchange", route);
  route();
});
