// aigc studio: a small client of this service's own API (no framework, nothing fetched from elsewhere).
// The key the user types is kept in localStorage and sent as "Authorization: Bearer KEY"; server-sent
// events are read with fetch and a ReadableStream, since EventSource cannot send that header.
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEY_STORE = "aigc.studio.key";
const IMAGE_KINDS = ["t2i", "class", "uncond"];
const HISTORY_THUMBS = 4;     // thumbnails per past job
const MAX_SIDE = 1024;        // the service's default image size limit: the largest size offered

// State, and hooks for tests: chunks counts streamed text pieces, progress the percentages shown,
// previews the previews shown.
const studio = window.studio = {models: {}, chunks: 0, progress: [], curl: "", job: null, abort: null,
                                previews: 0, thumbs: [], images: []};

// -- the API ---------------------------------------------------------------------------------------

const apiKey = () => $("#api-key").value.trim();

async function api(path, {method = "GET", body, signal} = {}) {
  const headers = {Authorization: `Bearer ${apiKey()}`};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body)});
  if (!res.ok) throw await apiError(res);
  return res;
}

async function apiError(res) {
  let message = `HTTP ${res.status} ${res.statusText}`;
  try {
    const data = await res.json();
    if (data && data.error && data.error.message) message = data.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  const err = new Error(message);
  err.status = res.status;
  return err;
}

const getJSON = async (path, options) => (await api(path, options)).json();

// Calls onEvent(name, data) for each server-sent event; onEvent answers false to stop reading.
async function readSSE(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length && onEvent(event, data.join("\n")) === false) return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// -- small helpers ---------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function num(selector) {
  const text = $(selector).value.trim();
  return text === "" ? undefined : Number(text);
}

const compact = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined && v !== ""));

function showError(err) {
  const box = $("#error");
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

// An image the key may read, as a blob: URL (kept in list, to be revoked later).
async function blobURL(path, list) {
  const url = URL.createObjectURL(await (await api(path)).blob());
  list.push(url);
  return url;
}

function kindOf(model) {
  if (!model) return null;
  if (model.family === "text" || model.family === "translate" || model.family === "asr") return model.family;
  const p = model.parameters || {};
  return p.text_conditional ? "t2i" : p.classes ? "class" : "uncond";
}

const current = () => studio.models[$("#model").value];

// -- models and the form ---------------------------------------------------------------------------

async function connect(event) {
  if (event) event.preventDefault();
  localStorage.setItem(KEY_STORE, apiKey());
  showError(null);
  const select = $("#model");
  const previous = select.value;
  select.replaceChildren();
  studio.models = {};
  try {
    const {data} = await getJSON("v1/models");
    for (const m of data) {
      studio.models[m.id] = m;
      select.append(new Option(`${m.id} (${m.family})`, m.id));
    }
    if (!data.length) throw new Error("This key may use none of the service's models.");
    if (previous in studio.models) select.value = previous;
    refreshPanels();
  } catch (err) {
    showError(err);
  }
  select.disabled = !select.options.length;
  onModel();
}

function onModel() {
  const model = current();
  const kind = kindOf(model);
  for (const field of document.querySelectorAll("[data-for]")) {
    field.hidden = !field.dataset.for.split(" ").includes(kind);
  }
  $("#generate").disabled = !model || studio.abort !== null;
  $("#model-info").textContent = model ? describeModel(model) : "";
  if (!IMAGE_KINDS.includes(kind)) return;
  const p = model.parameters;
  $("#class").replaceChildren(...(p.classes || []).map((name) => new Option(name, name)));
  const [w, h] = p.image_size.split("x").map(Number);
  const sizes = [];
  for (let k = 1; Math.max(w, h) * k <= MAX_SIDE; k *= 2) sizes.push(`${w * k}x${h * k}`);
  $("#size").replaceChildren(...sizes.map((s, i) => new Option(i ? `${s} (upscaled)` : s, s)));
}

function describeModel(m) {
  const p = m.parameters || {};
  if (m.family === "text") return `language model, context ${p.context_length} tokens`;
  if (m.family === "translate") return `translates ${p.source_language} to ${p.target_language}`;
  if (m.family === "asr") return `speech recogniser, ${p.sample_rate} Hz`;
  const cond = p.text_conditional ? "text-to-image" : p.classes ? `${p.classes.length} classes` : "unconditional";
  return `${cond}, ${p.image_size} pixels, ${p.channels} channel${p.channels === 1 ? "" : "s"}`;
}

function setBusy(busy) {
  $("#generate").disabled = busy || !current();
  $("#stop-run").hidden = !busy;
}

function clearOutput() {
  $("#output").textContent = "";
  $("#output-meta").textContent = "";
  $("#images").replaceChildren();
  for (const url of studio.images.splice(0)) URL.revokeObjectURL(url);
  $("#progress-box").hidden = true;
  $("#preview").hidden = true;
  studio.chunks = 0;
  studio.progress = [];
  studio.previews = 0;
}

function setCurl(path, body, stream) {
  const url = new URL(path, document.baseURI).href;
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  studio.curl = `curl ${stream ? "-N " : ""}${url} \\\n  -H "Authorization: Bearer $AIGC_KEY" \\\n` +
                `  -H "Content-Type: application/json" \\\n  -d '${json}'`;
  $("#curl").textContent = studio.curl;
  $("#copy-curl").disabled = false;
  $("#copy-status").textContent = "";
}

async function copyCurl() {
  try {
    await navigator.clipboard.writeText(studio.curl);
  } catch (_) {  // no clipboard API (plain http on another host): the old way
    const area = el("textarea", {value: studio.curl});
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("#copy-status").textContent = "Copied (the key is $AIGC_KEY).";
}

// -- generating ------------------------------------------------------------------------------------

async function generate(event) {
  event.preventDefault();
  const model = current();
  if (!model || studio.abort) return;
  showError(null);
  clearOutput();
  studio.abort = new AbortController();
  setBusy(true);
  try {
    const kind = kindOf(model);
    if (kind === "text") await runText(model);
    else if (kind === "translate") await runTranslation(model);
    else if (kind === "asr") await runTranscription(model);
    else await runImages(model, kind);
  } catch (err) {
    showError(err.name === "AbortError" ? new Error("Stopped.") : err);
  } finally {
    studio.abort = null;
    studio.job = null;
    setBusy(false);
    refreshPanels();
  }
}

async function runText(model) {
  const chat = $("#mode").value === "chat";
  const stop = $("#stop").value.replace(/\\n/g, "\n");
  const body = compact({model: model.id, max_tokens: num("#max-tokens"), temperature: num("#temperature"),
                        top_p: num("#top-p"), top_k: num("#top-k"), seed: num("#seed"), stop: stop || undefined,
                        stream: true, stream_options: {include_usage: true}});
  if (chat) body.messages = [{role: "user", content: $("#prompt").value}];
  else body.prompt = $("#prompt").value;
  const path = chat ? "v1/chat/completions" : "v1/completions";
  setCurl(path, body, true);
  const res = await api(path, {method: "POST", body, signal: studio.abort.signal});
  const out = $("#output");
  let usage = null;
  let finish = null;
  await readSSE(res, (event, data) => {
    if (data === "[DONE]") return false;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const piece = chat ? choice.delta && choice.delta.content : choice.text;
      if (piece) {
        out.textContent += piece;
        studio.chunks += 1;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    return true;
  });
  $("#output-meta").textContent = [
    usage && `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`,
    finish && `finished: ${finish}`].filter(Boolean).join(" · ");
}

async function runTranslation(model) {
  const lines = $("#input").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const body = {model: model.id, input: lines.length === 1 ? lines[0] : lines, beam: num("#beam") || 4};
  setCurl("v1/translations", body, false);
  const result = await getJSON("v1/translations", {method: "POST", body, signal: studio.abort.signal});
  $("#output").textContent = result.data.map((d) => d.translation).join("\n");
  const u = result.usage;
  if (u) $("#output-meta").textContent = `${u.prompt_tokens} input + ${u.completion_tokens} output tokens`;
}

async function runTranscription(model) {
  const file = $("#audio-file").files[0];
  if (!file) throw new Error("Choose an audio file to transcribe.");
  const form = new FormData();
  form.append("model", model.id);
  form.append("response_format", "verbose_json");
  form.append("file", file, file.name);
  $("#curl").textContent = `curl ${location.origin}/v1/audio/transcriptions -H "Authorization: Bearer $AIGC_KEY" ` +
    `-F model=${model.id} -F file=@${file.name}`;
  studio.curl = $("#curl").textContent;
  const res = await fetch("v1/audio/transcriptions", {method: "POST", body: form, signal: studio.abort.signal,
                                                     headers: {Authorization: `Bearer ${apiKey()}`}});
  if (!res.ok) throw await apiError(res);
  const result = await res.json();
  $("#output").textContent = result.text;
  $("#output-meta").textContent = `${result.duration.toFixed(1)} s of audio, ${result.segments.length} segment(s)`;
}

async function runImages(model, kind) {
  const request = compact({model: model.id, n: num("#n"), steps: num("#steps"), guidance: num("#guidance"),
                           seed: num("#seed"), size: $("#size").value});
  if (kind === "t2i") Object.assign(request, compact({prompt: $("#prompt").value,
                                                      negative_prompt: $("#negative-prompt").value.trim()}));
  if (kind === "class") request.class = $("#class").value;
  setCurl("v1/images/generations", request, false);
  showProgress({step: 0});
  const job = await getJSON("v1/jobs", {method: "POST", body: {type: "images.generations", request},
                                        signal: studio.abort.signal});
  studio.job = job.id;
  const res = await api(`v1/jobs/${job.id}/events`, {signal: studio.abort.signal});
  let end = null;
  await readSSE(res, (event, text) => {
    const data = JSON.parse(text);
    if (event === "queued") $("#progress-text").textContent = `queued, ${data.queue_position} job(s) ahead`;
    else if (event === "progress") showProgress(data);
    else end = {event, job: data};
    return end === null;
  });
  if (!end) throw new Error("The job's event stream ended before the job did.");
  if (end.event === "failed") throw new Error((end.job.error && end.job.error.message) || "The job failed.");
  if (end.event === "cancelled") throw new Error("The job was cancelled.");
  const steps = (end.job.request.sampling || {}).steps;
  showProgress({step: steps, steps});
  // the seed the service picked makes the curl command give the same images again
  setCurl("v1/images/generations", {...request, seed: end.job.request.seed}, false);
  await showImages(end.job);
}

function showProgress(p) {
  const pct = p.steps ? Math.round((100 * p.step) / p.steps) : 0;
  $("#progress-box").hidden = false;
  $("#progress").value = pct;
  studio.progress.push(pct);
  const eta = p.eta_s === null || p.eta_s === undefined ? "" : ` · about ${p.eta_s.toFixed(1)} s left`;
  $("#progress-text").textContent = p.steps ? `step ${p.step}/${p.steps} · ${pct} %${eta}` : "starting";
  if (p.preview) {
    $("#preview").src = `data:image/png;base64,${p.preview}`;
    $("#preview").hidden = false;
    studio.previews += 1;
  }
}

function describeJob(request) {
  const s = request.sampling || {};
  const what = request.prompt ? `“${request.prompt}”` : request.label != null ? `class ${request.label}` : "";
  return [what, `seed ${request.seed}`, `${s.steps} steps`, s.guidance != null && `guidance ${s.guidance}`,
          s.sampler].filter(Boolean).join(" · ");
}

async function showImages(job) {
  const box = $("#images");
  const caption = describeJob(job.request);
  for (const [i, image] of (job.images || []).entries()) {
    const src = image.b64_json ? `data:image/png;base64,${image.b64_json}`
                               : await blobURL(image.url, studio.images);
    box.append(el("figure", {}, el("img", {src, alt: `Image ${i + 1}: ${caption}`}),
                  el("figcaption", {textContent: caption})));
  }
}

async function stopRun() {
  if (studio.job) {  // the event stream then ends with "cancelled"
    try { await api(`v1/jobs/${studio.job}`, {method: "DELETE"}); } catch (err) { showError(err); }
  } else if (studio.abort) {
    studio.abort.abort();
  }
}

// -- history and usage -----------------------------------------------------------------------------

function refreshPanels() {
  loadHistory().catch(showError);
  loadUsage().catch(showError);
}

async function loadHistory() {
  const {data} = await getJSON("v1/jobs?limit=20");
  for (const url of studio.thumbs.splice(0)) URL.revokeObjectURL(url);
  $("#history").replaceChildren(...data.map(historyItem));
}

function historyItem(job) {
  const request = job.request || {};
  const when = new Date(job.created_at * 1000).toLocaleString();
  const thumbs = el("div", {className: "thumbs"});
  const item = el("li", {className: `job ${job.status}`},
                  thumbs, el("div", {},
                             el("strong", {textContent: `${job.model} · ${job.status}`}),
                             el("div", {textContent: describeJob(request)}),
                             el("small", {textContent: `${when} · ${job.id}`})));
  item.dataset.job = job.id;
  if (job.status === "succeeded") {
    for (let k = 0; k < Math.min(request.n || 1, HISTORY_THUMBS); k++) {
      const img = el("img", {alt: `Image ${k + 1} of ${job.id}`, className: "thumb"});
      thumbs.append(img);
      blobURL(`v1/jobs/${job.id}/results/${k}.png`, studio.thumbs)
        .then((url) => { img.src = url; }, () => img.remove());
    }
  }
  return item;
}

async function loadUsage() {
  const {data} = await getJSON("v1/usage");
  const fields = ["model", "requests", "errors", "prompt_tokens", "completion_tokens", "images", "diffusion_steps",
                  "compute_s"];
  $("#usage tbody").replaceChildren(...data.map((row) => {
    const tr = el("tr", {}, ...fields.map((f) => el("td", {textContent: String(row[f] ?? "")})));
    tr.dataset.model = row.model;
    return tr;
  }));
}

// -- start -----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", connect);
  $("#form").addEventListener("submit", generate);
  $("#model").addEventListener("change", onModel);
  $("#stop-run").addEventListener("click", stopRun);
  $("#copy-curl").addEventListener("click", copyCurl);
  $("#history-refresh").addEventListener("click", () => loadHistory().catch(showError));
  $("#usage-refresh").addEventListener("click", () => loadUsage().catch(showError));
  onModel();
  const saved = localStorage.getItem(KEY_STORE);
  if (saved) {
    $("#api-key").value = saved;
    connect();
  }
});
