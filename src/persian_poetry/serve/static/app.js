// The page: ask for a poem, show it as the server streams it (Server-Sent Events over a POST),
// then open the model up: tokens, attention per head, positional encodings. No framework, no network
// beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const fa = (n) => Number(n).toLocaleString("fa-IR");
const SIGN = { "-": "−", "U": "∪" };

let options = null;
let running = null; // the AbortController of the poem being written
let attention = { text: "", layers: {} }; // weights per layer for the explained text

// ---------------------------------------------------------------------------------------------
// Options

async function loadOptions() {
  const response = await fetch("/api/options");
  options = await response.json();
  const byName = (a, b) => a.name.localeCompare(b.name, "fa");
  fill($("poet"), [...options.poets].sort(byName), options.defaults.poet);
  fill($("form"), options.forms, options.defaults.form);
  fill($("metre"), options.metres.map((m) => ({ id: m.id, name: `${m.name} — ${fa(m.id)}` })), null, true);
  const layer = $("layer");
  for (let i = 0; i < options.model.n_layer; i++) {
    layer.add(new Option(`لایهٔ ${fa(i + 1)}`, String(i)));
  }
  layer.value = String(options.model.n_layer - 1);
  $("couplets").max = options.limits.couplets_max;
}

function fill(select, items, selected, keep = false) {
  if (!keep) select.innerHTML = "";
  for (const item of items) select.add(new Option(item.name, String(item.id)));
  if (selected !== null) select.value = String(selected);
}

// ---------------------------------------------------------------------------------------------
// Writing a poem

function request() {
  const value = (id) => $(id).value.trim();
  const number = (id) => (value(id) === "" ? null : Number(value(id)));
  const body = {
    poet: value("poet"), form: value("form"), couplets: number("couplets"),
    metre: value("metre") === "" ? null : Number(value("metre")),
    rhyme: value("rhyme") || null, radif: value("radif") || null,
    temperature: number("temperature"), top_k: number("top_k"), top_p: number("top_p"),
    seed: number("seed"), free: $("free").checked,
  };
  for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
  return body;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { event, data: data ? JSON.parse(data) : null };
    }
  }
}

class PoemView {
  constructor(root) {
    this.root = root;
    this.root.innerHTML = "";
    this.hemistichs = []; // {el, verse, scansion}
    this.couplet = null;
    this.newHemistich();
  }

  newHemistich() {
    if (this.hemistichs.length % 2 === 0) {
      this.couplet = document.createElement("div");
      this.couplet.className = "couplet";
      this.root.appendChild(this.couplet);
    }
    const el = document.createElement("div");
    el.className = "hemistich writing";
    const verse = document.createElement("div");
    verse.className = "verse";
    const scansion = document.createElement("div");
    scansion.className = "scansion";
    el.append(verse, scansion);
    this.couplet.appendChild(el);
    this.hemistichs.push({ el, verse, scansion });
  }

  get current() { return this.hemistichs[this.hemistichs.length - 1]; }

  text(piece) { this.current.verse.textContent += piece; }

  finish(kind, data) {
    const h = this.current;
    h.el.classList.remove("writing");
    h.verse.textContent = data.hemistich;
    showScansion(h.scansion, data.scan.syllables);
    if (kind !== "hemi") this.couplet.classList.add("done");
    if (kind !== "end") this.newHemistich();
  }

  stop() { for (const h of this.hemistichs) h.el.classList.remove("writing"); }
}

function showScansion(el, syllables) {
  el.innerHTML = "";
  if (!syllables || !syllables.length) {
    const none = document.createElement("span");
    none.className = "none";
    none.textContent = "(تقطیع نشد)";
    el.appendChild(none);
    return;
  }
  for (const s of syllables) {
    const cell = document.createElement("span");
    cell.className = "syl";
    const letters = document.createElement("b");
    letters.textContent = s.letters || "·";
    const weight = document.createElement("i");
    weight.textContent = [...s.weight].map((c) => SIGN[c] || c).join("");
    cell.title = s.note || "";
    cell.append(letters, weight);
    el.appendChild(cell);
  }
}

async function write(event) {
  event.preventDefault();
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  $("write").disabled = true;
  $("stop").disabled = false;
  $("poem-card").hidden = false;
  $("explain").hidden = true;
  $("summary").textContent = "";
  const view = new PoemView($("poem"));
  const started = performance.now();
  let first = null;
  setStatus("در حال سرودن…");
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request()), signal: controller.signal,
    });
    if (response.status === 503) {
      const wait = response.headers.get("Retry-After") || "چند";
      throw new Error(`سرور سرش شلوغ است؛ ${fa(wait)} ثانیهٔ دیگر دوباره بکوشید.`);
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.message || `خطای ${fa(response.status)}`);
    }
    for await (const { event: kind, data } of events(response)) {
      if (kind === "text") {
        if (first === null) first = performance.now() - started;
        view.text(data.text);
      } else if (kind === "hemi" || kind === "beyt" || kind === "end") {
        view.finish(kind, data);
        setStatus(`${fa(view.hemistichs.filter((h) => !h.el.classList.contains("writing")).length)} مصراع سروده شد…`);
      } else if (kind === "poem") {
        finishPoem(view, data, first, performance.now() - started);
      } else if (kind === "error") {
        throw new Error(data.message);
      }
    }
  } catch (err) {
    if (err.name === "AbortError") setStatus("سرودن متوقف شد.");
    else setStatus(err.message, true);
  } finally {
    view.stop();
    if (running === controller) {
      running = null;
      $("write").disabled = false;
      $("stop").disabled = true;
    }
  }
}

function finishPoem(view, data, first, total) {
  const { poem, prosody } = data;
  // The whole poem's scansion: one metre for all hemistichs, replacing each hemistich's own guess.
  const lines = poem.couplets.flat();
  const scanned = prosody.hemistichs || [];
  let j = 0;
  lines.forEach((line, i) => {
    if (j < scanned.length && scanned[j].text === line) {
      if (scanned[j].syllables.length && view.hemistichs[i]) showScansion(view.hemistichs[i].scansion, scanned[j].syllables);
      j++;
    }
  });
  const parts = [];
  if (prosody.name) parts.push(`وزن: ${prosody.name}`);
  if (prosody.rhyme && prosody.rhyme.qafiya) parts.push(`قافیه: ${prosody.rhyme.qafiya}`);
  if (prosody.rhyme && prosody.rhyme.radif && prosody.rhyme.radif.length) parts.push(`ردیف: ${prosody.rhyme.radif.join(" ")}`);
  parts.push(`بذر: ${fa(poem.seed)}`);
  parts.push(`${fa(poem.tokens)} توکن در ${fa((total / 1000).toFixed(1))} ثانیه` +
             (first !== null ? ` (نخستین واژه پس از ${fa((first / 1000).toFixed(1))} ثانیه)` : ""));
  $("summary").textContent = parts.join(" · ");
  setStatus("شعر کامل شد.");
  explain(lines).catch((err) => setStatus(err.message, true));
}

// ---------------------------------------------------------------------------------------------
// Inside the model

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || `خطای ${fa(response.status)}`);
  return data;
}

function shown(token) {
  return token.replace(/\u200c/g, "¦").replace(/^ /, "·");
}

async function explain(lines) {
  const report = await postJSON("/api/explain/tokens", { text: lines.join("\n") });
  showTokens(report);
  // Attention needs the text within the token limit: drop couplets from the end until it fits.
  let kept = lines.length;
  let fits = report.fits;
  while (!fits && kept > 2) {
    kept -= 2;
    fits = (await postJSON("/api/explain/tokens", { text: lines.slice(0, kept).join("\n") })).fits;
  }
  attention = { text: lines.slice(0, kept).join("\n"), layers: {} };
  $("explain").hidden = false;
  if (kept < lines.length) {
    $("token-stats").textContent += ` توجه برای ${fa(kept / 2)} بیت نخست نشان داده می‌شود.`;
  }
  await Promise.all([showLayer(), drawPositions(report.ids.length)]);
}

function showTokens(report) {
  const box = $("tokens");
  box.innerHTML = "";
  report.tokens.forEach((token, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = shown(token);
    chip.title = `شناسه ${fa(report.ids[i])}`;
    box.appendChild(chip);
  });
  let stats = `${fa(report.ids.length)} توکن واژه‌ساز مدل در برابر ${fa(report.char_tokens.length)} نویسه؛ ` +
              `حد بافتار مدل ${fa(report.context_length)} توکن است`;
  stats += report.fits ? " و این متن در آن جا می‌شود." : ` و این متن ${fa(report.overflow)} توکن از آن بیشتر است.`;
  $("token-stats").textContent = stats;
}

async function showLayer() {
  // One layer at a time (the server sends no more), each kept once fetched.
  const layer = Number($("layer").value);
  if (!attention.layers[layer]) {
    attention.layers[layer] = await postJSON("/api/explain/attention", { text: attention.text, layer });
  }
  const trace = attention.layers[layer];
  const weights = trace.weights[0]; // [head][query][key <= query]
  const tokens = $("attn-tokens");
  tokens.innerHTML = "";
  trace.tokens.forEach((token, q) => {
    const chip = document.createElement("span");
    chip.className = "chip attn-token";
    chip.dataset.index = String(q);
    chip.textContent = shown(token);
    chip.addEventListener("mouseenter", () => focusToken(trace, weights, q));
    tokens.appendChild(chip);
  });
  const heads = $("heads");
  heads.innerHTML = "";
  weights.forEach((_, h) => {
    const row = document.createElement("div");
    row.className = "head-row";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `سر ${fa(h + 1)}`;
    const cells = document.createElement("span");
    cells.className = "cells";
    for (const token of trace.tokens) {
      const cell = document.createElement("span");
      cell.className = "cell";
      cell.textContent = shown(token);
      cells.appendChild(cell);
    }
    row.append(label, cells);
    heads.appendChild(row);
  });
  focusToken(trace, weights, trace.tokens.length - 1);
}

function focusToken(trace, weights, q) {
  for (const chip of $("attn-tokens").children) chip.classList.toggle("query", Number(chip.dataset.index) === q);
  [...$("heads").children].forEach((row, h) => {
    const row_weights = weights[h][q];
    let best = 0;
    [...row.querySelector(".cells").children].forEach((cell, k) => {
      const w = k <= q ? row_weights[k] : 0;
      if (w > row_weights[best]) best = k;
      cell.style.background = `rgba(138, 59, 18, ${Math.min(1, w).toFixed(3)})`;
      cell.style.color = w > 0.5 ? "white" : "";
      cell.title = `${fa((w * 100).toFixed(1))}٪`;
    });
    row.querySelector(".label").textContent =
      `سر ${fa(h + 1)} ← «${shown(trace.tokens[best])}» ${fa((row_weights[best] * 100).toFixed(0))}٪`;
  });
}

async function drawPositions(used) {
  // The server's default table: the model's positions by its width, as much as its bound allows.
  const response = await fetch("/api/explain/positions");
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || `خطای ${fa(response.status)}`);
  const canvas = $("pe");
  canvas.width = data.dim;
  canvas.height = data.positions;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(data.dim, data.positions);
  data.table.forEach((row, p) => row.forEach((v, d) => {
    const i = 4 * (p * data.dim + d);
    const t = Math.max(-1, Math.min(1, v));
    // Diverging: blue (−1), white (0), red (+1).
    image.data[i] = t > 0 ? 255 : Math.round(255 * (1 + t));
    image.data[i + 1] = Math.round(255 * (1 - Math.abs(t)));
    image.data[i + 2] = t < 0 ? 255 : Math.round(255 * (1 - t));
    image.data[i + 3] = p < used ? 255 : 110; // positions past this poem's tokens are faded
  }));
  ctx.putImageData(image, 0, 0);
  $("pe-info").textContent = `${fa(data.positions)} جایگاه × ${fa(data.dim)} بعد؛ ` +
    `${fa(Math.min(used, data.positions))} جایگاه نخست را توکن‌های این شعر پر کرده‌اند (پررنگ).` +
    (data.positional === "rotary"
      ? " این مدل جدول را به بردارها نمی‌افزاید (rotary): هر سر، پرسش و کلید را به همین زاویه‌ها می‌چرخاند."
      : "");
  canvas.onmousemove = (e) => {
    const rect = canvas.getBoundingClientRect();
    const d = Math.floor((e.clientX - rect.left) / rect.width * data.dim);
    const p = Math.floor((e.clientY - rect.top) / rect.height * data.positions);
    if (data.table[p] && data.table[p][d] !== undefined) {
      canvas.title = `جایگاه ${fa(p)}، بعد ${fa(d)}: ${fa(data.table[p][d].toFixed(3))}`;
    }
  };
}

// ---------------------------------------------------------------------------------------------

$("controls").addEventListener("submit", write);
$("stop").addEventListener("click", () => running && running.abort());
$("layer").addEventListener("change", () => showLayer().catch((err) => setStatus(err.message, true)));
loadOptions().catch((err) => setStatus(`گزینه‌ها بار نشدند: ${err.message}`, true));
