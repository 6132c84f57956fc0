// The facenet web page: plain JavaScript over the HTTP API (no build step, nothing fetched from
// elsewhere). The API key is asked for once and kept in sessionStorage (this tab only); every API
// call sends it as a bearer token. Errors show the problem-details body's `detail`.
"use strict";

const KEY = "facenet.api_key";
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ the key and the API

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

function showKey() {
  const key = apiKey();
  $("key-state").textContent = key ? "API key set for this tab" : "no API key";
  $("key-forget").hidden = !key;
  $("key-change").hidden = !key;
  $("key-form").hidden = Boolean(key);
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// fetch `path` (relative to the page) with the key; the JSON answer, or an ApiError
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${apiKey()}`);
  headers.set("Accept", "application/json, application/problem+json");
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 401) {
      $("key-form").hidden = false;
      $("key-input").focus();
    }
    throw new ApiError(response.status, body);
  }
  return body;
}

function showError(id, error) {
  const el = $(id);
  if (!error) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  let text = error instanceof ApiError ? error.message : `could not reach the server: ${error.message || error}`;
  if (error instanceof ApiError && error.problem && Array.isArray(error.problem.errors)) {
    const more = error.problem.errors.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`);
    if (more.length) text += ` (${more.join("; ")})`;
  }
  el.textContent = text;
  el.hidden = false;
}

async function busy(id, work) {
  $(id).hidden = false;
  try {
    return await work();
  } finally {
    $(id).hidden = true;
  }
}

async function showModel() {
  try {
    const response = await fetch("readyz");
    const ready = await response.json();
    if (!response.ok) throw new Error(ready.detail || response.status);
    const m = ready.model;
    $("model").textContent = `${m.name} (${m.version}), ${m.embedding_dim}-d; ` +
      `${ready.gallery_identities} enrolled`;
  } catch (e) {
    $("model").textContent = `server not ready: ${e.message || e}`;
  }
}

// ------------------------------------------------------------------ answers, either shape

// The faces of image `i` of a verify answer: the shared result shape ({images: [{faces}]}),
// or the older one ({a: {box}, b: {box}}).
function verifyFaces(answer, i) {
  if (Array.isArray(answer.images)) return answer.images[i].faces || [];
  const side = i === 0 ? answer.a : answer.b;
  return side ? [{ box: side.box, face_index: side.face_index, used: true }] : [];
}

// The faces of an identify answer, each with `name` and `known` (null: not identified).
function identifiedFaces(answer) {
  const faces = Array.isArray(answer.images)
    ? answer.images.flatMap((im) => im.faces || [])
    : answer.faces || [];
  return faces.map((f) => {
    const name = f.identity !== undefined ? f.identity : f.name;
    const known = name == null ? null : f.known !== undefined ? f.known : name !== "unknown";
    return { ...f, name: name == null ? null : name, known };
  });
}

function fixed(v, digits = 3) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "n/a";
}

// ------------------------------------------------------------------ photos on canvases

const images = {}; // input id -> {file, bitmap}

async function loadPhoto(inputId, file) {
  const canvas = $(`${inputId}-canvas`) || $(inputId.replace(/-file$/, "-canvas"));
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    images[inputId] = { file, img };
    if (canvas) drawPhoto(canvas, img, []);
  } catch (_) {
    images[inputId] = { file, img: null };
    if (canvas) canvas.hidden = true;
  } finally {
    URL.revokeObjectURL(url);
  }
}

// draw `img` with `boxes` ([{box, color, label, dashed}]) in image pixels
function drawPhoto(canvas, img, boxes) {
  canvas.width = img.naturalWidth || img.videoWidth || img.width;
  canvas.height = img.naturalHeight || img.videoHeight || img.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const unit = Math.max(1, Math.max(canvas.width, canvas.height) / 400);
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.box;
    ctx.lineWidth = 2.5 * unit;
    ctx.strokeStyle = b.color;
    ctx.setLineDash(b.dashed ? [6 * unit, 4 * unit] : []);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (b.label) {
      ctx.setLineDash([]);
      ctx.font = `600 ${Math.round(13 * unit)}px system-ui, sans-serif`;
      const pad = 3 * unit;
      const h = 16 * unit;
      const w = ctx.measureText(b.label).width + 2 * pad;
      const y = y1 - h >= 0 ? y1 - h : y2;
      ctx.fillStyle = b.color;
      ctx.fillRect(x1 - ctx.lineWidth / 2, y, w, h);
      ctx.fillStyle = "#fff";
      ctx.textBaseline = "middle";
      ctx.fillText(b.label, x1 - ctx.lineWidth / 2 + pad, y + h / 2);
    }
  }
  canvas.hidden = false;
}

function wireDrop(zone) {
  const input = $(zone.dataset.input);
  const changed = () => input.dispatchEvent(new Event("change", { bubbles: true }));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
    if (!files.length) return;
    const dt = new DataTransfer();
    for (const f of input.multiple ? files : files.slice(0, 1)) dt.items.add(f);
    input.files = dt.files;
    changed();
  });
}

// ------------------------------------------------------------------ verify

const SAME = "#16803c";
const DIFFERENT = "#b3261e";
const OTHER = "#8a93a6";

function verifyReady() {
  $("verify-run").disabled = !(images["verify-a"] && images["verify-b"]);
}

async function verify() {
  showError("verify-error", null);
  $("verify-result").hidden = true;
  const form = new FormData();
  form.append("image_a", images["verify-a"].file);
  form.append("image_b", images["verify-b"].file);
  $("verify-run").disabled = true;
  try {
    const answer = await busy("verify-busy", () => api("v1/verify", { method: "POST", body: form }));
    const color = answer.same ? SAME : DIFFERENT;
    $("verify-verdict").textContent = answer.same ? "Same person" : "Different people";
    $("verify-verdict").className = `verdict ${answer.same ? "same" : "different"}`;
    $("verify-distance").textContent = `${fixed(answer.distance)} (squared L2, 0 to 4)`;
    $("verify-threshold").textContent =
      `${fixed(answer.threshold)}: ${answer.same ? "at or under it" : "over it"}`;
    $("verify-op").textContent = answer.threshold_source
      ? `${answer.operating_point} (${answer.threshold_source})`
      : answer.operating_point;
    const notes = [];
    ["verify-a", "verify-b"].forEach((id, i) => {
      const faces = verifyFaces(answer, i);
      const entry = images[id];
      if (faces.length > 1) notes.push(`${entry.file.name}: ${faces.length} faces; the solid box was compared.`);
      if (!entry.img) return;
      const boxes = faces.map((f) => ({
        box: f.box,
        color: f.used === false ? OTHER : color,
        dashed: f.used === false,
        label: f.used === false ? "" : fixed(answer.distance),
      }));
      drawPhoto($(`${id}-canvas`), entry.img, boxes);
    });
    $("verify-notes").textContent = notes.join(" ");
    $("verify-result").hidden = false;
  } catch (e) {
    showError("verify-error", e);
  } finally {
    verifyReady();
  }
}

// ------------------------------------------------------------------ identify

const PALETTE = ["#2456c9", "#16803c", "#9c27b0", "#d35400", "#00838f", "#7b5e00"];

async function identify(file, picture) {
  showError("identify-error", null);
  $("identify-result").hidden = true;
  const form = new FormData();
  form.append("image", file, file.name || "camera.png");
  $("identify-run").disabled = true;
  try {
    const answer = await busy("identify-busy", () => api("v1/identify", { method: "POST", body: form }));
    const faces = identifiedFaces(answer);
    const list = $("identify-faces");
    list.replaceChildren();
    const boxes = faces.map((f, i) => {
      const color = f.known ? PALETTE[i % PALETTE.length] : OTHER;
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      const name = document.createElement("strong");
      name.className = "face-name";
      name.textContent = f.name == null ? "not identified" : f.name;
      li.append(swatch, name);
      let text = "";
      if (f.distance !== undefined) text += `, distance ${fixed(f.distance)}`;
      const matches = (f.matches || []).map((m) => `${m.name} ${fixed(m.distance)}`);
      if (matches.length) text += `; nearest: ${matches.join(", ")}`;
      li.append(document.createTextNode(text));
      list.append(li);
      return { box: f.box, color, label: f.name == null ? "" : f.name, dashed: !f.known };
    });
    const threshold = answer.threshold !== undefined ? answer.threshold : faces[0] && faces[0].threshold;
    const op = answer.operating_point || (faces[0] && faces[0].operating_point) || "";
    $("identify-summary").textContent = faces.length
      ? `${faces.length} face${faces.length === 1 ? "" : "s"}; known within distance ${fixed(threshold)} (${op})`
      : "no face found";
    if (picture) drawPhoto($("identify-canvas"), picture, boxes);
    $("identify-result").hidden = false;
  } catch (e) {
    showError("identify-error", e);
  } finally {
    $("identify-run").disabled = !images["identify-file"];
  }
}

let stream = null;

async function cameraStart() {
  showError("identify-error", null);
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
    $("camera-video").srcObject = stream;
    $("camera").hidden = false;
    $("camera-start").hidden = true;
    $("camera-snap").hidden = false;
    $("camera-stop").hidden = false;
  } catch (e) {
    showError("identify-error", new Error(`no camera: ${e.message || e.name}`));
  }
}

function cameraStop() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("camera").hidden = true;
  $("camera-start").hidden = false;
  $("camera-snap").hidden = true;
  $("camera-stop").hidden = true;
}

async function cameraSnap() {
  const video = $("camera-video");
  if (!video.videoWidth) return;
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((ok) => frame.toBlob(ok, "image/png"));
  const file = new File([blob], "camera.png", { type: "image/png" });
  const img = new Image();
  img.src = frame.toDataURL("image/png");
  await img.decode();
  await identify(file, img);
}

// ------------------------------------------------------------------ gallery

let offset = 0;

async function listGallery() {
  showError("gallery-error", null);
  try {
    const page = await api(`v1/gallery/identities?offset=${offset}&limit=${PAGE_SIZE}`);
    if (page.identities.length === 0 && offset > 0 && page.total > 0) {
      offset = Math.max(0, Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return listGallery();
    }
    const rows = $("gallery-rows");
    rows.replaceChildren();
    for (const ident of page.identities) {
      const tr = document.createElement("tr");
      const cells = [
        ident.name,
        ident.images,
        ident.embeddings,
        ident.created_at ? new Date(ident.created_at * 1000).toLocaleString() : "",
      ];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        if (i === 1) {  // the photo count opens the identity's photos, each removable
          const open = document.createElement("button");
          open.type = "button";
          open.className = "link photos";
          open.textContent = String(v);
          open.title = "show the photos";
          open.addEventListener("click", () => togglePhotos(tr, ident.name));
          td.append(open);
        } else {
          td.textContent = String(v);
        }
        if (i === 1 || i === 2) td.className = "num";
        tr.append(td);
      });
      const td = document.createElement("td");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link remove";
      remove.textContent = "remove";
      remove.addEventListener("click", () => removeIdentity(ident.name));
      td.append(remove);
      tr.append(td);
      rows.append(tr);
    }
    if (!page.identities.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.className = "muted";
      td.textContent = "nobody enrolled yet";
      tr.append(td);
      rows.append(tr);
    }
    const last = offset + page.identities.length;
    $("gallery-range").textContent = page.total
      ? `${offset + 1}\u2013${last} of ${page.total}`
      : "";
    $("gallery-prev").disabled = offset === 0;
    $("gallery-next").disabled = last >= page.total;
  } catch (e) {
    showError("gallery-error", e);
  }
}

async function removeIdentity(name) {
  if (!window.confirm(`Remove ${name} and every photo of them from the gallery?`)) return;
  showError("gallery-error", null);
  try {
    const done = await api(`v1/gallery/identities/${encodeURIComponent(name)}`, { method: "DELETE" });
    const n = done.removed_embeddings;
    $("enrol-result").textContent = `removed ${done.name} (${n} face${n === 1 ? "" : "s"})`;
    $("enrol-result").hidden = false;
  } catch (e) {
    showError("gallery-error", e);
  }
  await listGallery();
  showModel();
}

async function togglePhotos(tr, name) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("photos-row")) {
    next.remove();
    return;
  }
  showError("gallery-error", null);
  try {
    const page = await api(
      `v1/gallery/images?identity=${encodeURIComponent(name)}&limit=${PAGE_SIZE}`,
    );
    const row = document.createElement("tr");
    row.className = "photos-row";
    const td = document.createElement("td");
    td.colSpan = 5;
    const list = document.createElement("ul");
    list.className = "photos";
    for (const image of page.images) {
      const li = document.createElement("li");
      li.textContent = `#${image.id} ${image.name} (${image.faces} face${image.faces === 1 ? "" : "s"}) `;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link remove-image";
      remove.textContent = "remove photo";
      remove.addEventListener("click", () => removeImage(image));
      li.append(remove);
      list.append(li);
    }
    if (page.total > page.images.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = `and ${page.total - page.images.length} more`;
      list.append(li);
    }
    td.append(list);
    row.append(td);
    tr.after(row);
  } catch (e) {
    showError("gallery-error", e);
  }
}

async function removeImage(image) {
  if (!window.confirm(`Remove photo ${image.name} of ${image.identity} from the gallery?`)) return;
  showError("gallery-error", null);
  try {
    const done = await api(`v1/gallery/images/${image.id}`, { method: "DELETE" });
    const gone = done.identity_removed ? `; ${done.image.identity} had no other photo` : "";
    $("enrol-result").textContent = `removed photo ${done.image.name} of ${done.image.identity}${gone}`;
    $("enrol-result").hidden = false;
  } catch (e) {
    showError("gallery-error", e);
  }
  await listGallery();
  showModel();
}

async function enrol(event) {
  event.preventDefault();
  showError("enrol-error", null);
  $("enrol-result").hidden = true;
  const name = $("enrol-name").value.trim();
  const files = [...$("enrol-files").files];
  if (!name || !files.length) {
    showError("enrol-error", new ApiError(0, { detail: "a name and at least one photo" }));
    return;
  }
  const form = new FormData();
  for (const f of files) {
    form.append("images", f);
    form.append("names", name);
  }
  $("enrol-run").disabled = true;
  try {
    const answer = await busy("enrol-busy", () =>
      api("v1/gallery/identities", { method: "POST", body: form }),
    );
    const parts = answer.identities.map((i) => {
      const dup = i.duplicates.length ? `, ${i.duplicates.length} already enrolled` : "";
      return `${i.name}: ${i.added} face${i.added === 1 ? "" : "s"} added${dup}`;
    });
    $("enrol-result").textContent = `enrolled ${parts.join("; ")}`;
    $("enrol-result").hidden = false;
    $("enrol-form").reset();
    $("enrol-files-label").textContent = "Photos: choose or drop";
    await listGallery();
    showModel();
  } catch (e) {
    showError("enrol-error", e);
  } finally {
    $("enrol-run").disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

function selectTab(name) {
  for (const tab of document.querySelectorAll("#tabs [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const section of document.querySelectorAll("main .tab")) section.hidden = section.id !== name;
  if (name === "gallery" && apiKey()) listGallery();
  if (name !== "identify") cameraStop();
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    showKey();
    if (!$("gallery").hidden) listGallery();
  });
  $("key-change").addEventListener("click", () => {
    $("key-form").hidden = false;
    $("key-input").focus();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showKey();
  });
  for (const tab of document.querySelectorAll("#tabs [role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  document.querySelectorAll(".drop").forEach(wireDrop);

  for (const id of ["verify-a", "verify-b"]) {
    $(id).addEventListener("change", async () => {
      const file = $(id).files[0];
      if (!file) return;
      $("verify-result").hidden = true;
      await loadPhoto(id, file);
      verifyReady();
    });
  }
  $("verify-run").addEventListener("click", verify);

  $("identify-file").addEventListener("change", async () => {
    const file = $("identify-file").files[0];
    if (!file) return;
    $("identify-result").hidden = true;
    await loadPhoto("identify-file", file);
    $("identify-run").disabled = false;
  });
  $("identify-run").addEventListener("click", () => {
    const entry = images["identify-file"];
    if (entry) identify(entry.file, entry.img);
  });
  const camera = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  $("camera-start").hidden = !camera;
  $("camera-start").addEventListener("click", cameraStart);
  $("camera-stop").addEventListener("click", cameraStop);
  $("camera-snap").addEventListener("click", cameraSnap);

  $("enrol-form").addEventListener("submit", enrol);
  $("enrol-files").addEventListener("change", () => {
    const n = $("enrol-files").files.length;
    $("enrol-files-label").textContent = n ? `${n} photo${n === 1 ? "" : "s"} chosen` : "Photos: choose or drop";
  });
  $("gallery-prev").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    listGallery();
  });
  $("gallery-next").addEventListener("click", () => {
    offset += PAGE_SIZE;
    listGallery();
  });
  $("gallery-refresh").addEventListener("click", listGallery);

  showKey();
  showModel();
});
