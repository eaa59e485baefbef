// smalto's web UI: chat (with images and sounds, streamed replies) and draw, over the server's OpenAI API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], attachments: [], controller: null, config: null, recording: null };

// --- API access (with the optional key kept in localStorage)

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem("smalto-key");
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function api(path, body, signal) {
  for (;;) {
    const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
    if (response.status === 401) { await askForKey(); continue; }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  }
}

function askForKey() {
  return new Promise((resolve) => {
    $("key-dialog").hidden = false;
    $("key-input").focus();
    $("key-form").onsubmit = (e) => {
      e.preventDefault();
      localStorage.setItem("smalto-key", $("key-input").value);
      $("key-dialog").hidden = true;
      resolve();
    };
  });
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

// --- chat

function image(src, cls = "pixels") {
  const img = document.createElement("img");
  img.src = src;
  img.className = cls;
  img.alt = "image";
  return img;
}

function bubble(role, text = "", images = []) {
  $("empty").hidden = true;
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  images.forEach((src) => div.append(shown(src)));
  const span = document.createElement("span");
  span.textContent = text;
  div.append(span);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return span;
}

// An attachment is an image's data URL (a string) or a sound: { audio: its data URL, format }.
function sound(src) {
  const player = document.createElement("audio");
  player.controls = true;
  player.src = src;
  player.className = "sound";
  return player;
}

const shown = (item) => (typeof item === "string" ? image(item) : sound(item.audio));

const SOUND_FORMATS = { wav: "wav", wave: "wav", flac: "flac", ogg: "ogg", oga: "ogg" };

function soundFormat(file) {
  const ext = file.name.split(".").pop().toLowerCase();
  return SOUND_FORMATS[ext] || SOUND_FORMATS[file.type.replace(/^audio\/(x-)?/, "")];
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren(...state.attachments.map((src, i) => {
    const chip = document.createElement("div");
    chip.className = "chip";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "Remove";
    remove.onclick = () => { state.attachments.splice(i, 1); renderAttachments(); };
    chip.append(shown(src), remove);
    return chip;
  }));
}

function attachFile(file) {
  const format = file && soundFormat(file);
  if (format && !state.config?.sounds) { toast("This model was not trained on sounds."); return; }
  if (!file || (!format && !file.type.startsWith("image/"))) {
    toast(state.config?.sounds ? "That is not an image or a sound (WAV, FLAC, OGG)." : "That is not an image file.");
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.attachments.push(format ? { audio: reader.result, format } : reader.result);
    renderAttachments();
    $("chat-input").focus();
  };
  reader.readAsDataURL(file);
}

// --- recording: the microphone through Web Audio, kept as 16-bit PCM WAV at the context's rate

const RECORDER = `registerProcessor("keep", class extends AudioWorkletProcessor {
  process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice()); return true; }
});`;

function wavFile(chunks, rate) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);  // PCM, mono
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let at = 44;
  for (const chunk of chunks) {
    for (const x of chunk) { view.setInt16(at, Math.max(-1, Math.min(1, x)) * 32767, true); at += 2; }
  }
  return new Blob([view], { type: "audio/wav" });
}

// Stops by itself at the longest sound the model hears (the server refuses longer ones).
async function record() {
  if (state.recording) { state.recording.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    toast(`No microphone: ${e.message}`);
    return;
  }
  const context = new AudioContext({ sampleRate: 16000 });
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([RECORDER], { type: "text/javascript" })));
  const source = context.createMediaStreamSource(stream);
  const keep = new AudioWorkletNode(context, "keep");
  const chunks = [];
  const limit = Math.round(state.config.sound_seconds * context.sampleRate);
  let kept = 0;
  const stop = () => {
    if (!state.recording) return;
    state.recording = null;
    $("record").classList.remove("recording");
    $("record").title = "Record a sound";
    source.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    const rate = context.sampleRate;
    context.close();
    const file = new File([wavFile(chunks, rate)], "recording.wav", { type: "audio/wav" });
    attachFile(file);
  };
  keep.port.onmessage = (e) => {
    const piece = e.data.subarray(0, limit - kept);
    chunks.push(piece);
    kept += piece.length;
    if (kept >= limit) stop();
  };
  source.connect(keep);
  state.recording = { stop };
  $("record").classList.add("recording");
  $("record").title = `Recording (up to ${state.config.sound_seconds.toFixed(2)} s): click to stop`;
}

function part(item) {
  if (typeof item === "string") return { type: "image_url", image_url: { url: item } };
  return { type: "input_audio", input_audio: { data: item.audio.split(",")[1], format: item.format } };
}

function setBusy(busy) {
  $("send").textContent = busy ? "Stop" : "Send";
  $("send").classList.toggle("stop", busy);
}

const hasItem = (m) => Array.isArray(m.content) && m.content.some((p) => p.type !== "text");

async function send() {
  if (state.controller) { state.controller.abort(); return; }  // the button is "Stop" while replying
  const input = $("chat-input");
  const text = input.value.trim();
  const images = state.attachments;
  if (!text && !images.length) return;
  if (images.length && state.history.some(hasItem)) {
    // The model reads one image per conversation: a new image starts a new one.
    state.history = [];
    const divider = document.createElement("div");
    divider.className = "divider";
    divider.textContent = "new item, new conversation";
    $("messages").append(divider);
  }
  const content = images.length
    ? [...images.map(part), ...(text ? [{ type: "text", text }] : [])]
    : text;
  state.history.push({ role: "user", content });
  bubble("user", text, images);
  input.value = "";
  autosize();
  state.attachments = [];
  renderAttachments();

  const out = bubble("assistant");
  out.parentElement.classList.add("pending");
  state.controller = new AbortController();
  setBusy(true);
  let reply = "";
  let thought = "";
  let thinking = null;  // a collapsed <details> holding the reasoning, made when the first piece arrives
  const request = { model: state.model, messages: state.history, stream: true };
  const effort = $("chat-effort").value;
  if (effort !== "none") request.reasoning_effort = effort;
  try {
    const response = await api("/v1/chat/completions", request, state.controller.signal);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices) {
          reply += choice.delta.content || "";
          if (choice.delta.reasoning_content) {
            if (!thinking) {
              thinking = document.createElement("details");
              thinking.className = "thinking";
              const summary = document.createElement("summary");
              summary.textContent = "Thought";
              thinking.append(summary, document.createElement("div"));
              out.before(thinking);
            }
            thought += choice.delta.reasoning_content;
            thinking.lastChild.textContent = thought;
          }
          if (choice.delta.answered_by) {  // who produced the answer: the model, or the solver from its description
            const who = document.createElement("div");
            who.className = "answered-by";
            who.textContent = choice.delta.answered_by === "solver"
              ? "answered by the solver, from the model's description" : "answered by the model";
            out.after(who);
          }
        }
        out.textContent = reply;
        out.parentElement.scrollIntoView({ block: "end" });
      }
    }
    state.history.push({ role: "assistant", content: reply });
  } catch (e) {
    state.history.pop();  // the turn failed: leave it out of the conversation
    if (e.name === "AbortError") {
      if (reply) state.history.push({ role: "user", content }, { role: "assistant", content: reply });
    } else {
      out.parentElement.remove();
      bubble("error", e.message);
    }
  } finally {
    out.parentElement.classList.remove("pending");
    if (!reply && out.parentElement.isConnected) out.textContent = "(no reply)";
    state.controller = null;
    setBusy(false);
    input.focus();
  }
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  state.attachments = [];
  renderAttachments();
  $("messages").replaceChildren($("empty"));
  $("empty").hidden = false;
  showMode("chat");
}

function autosize() {
  const input = $("chat-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 180)}px`;
}

// --- draw

async function draw() {
  const prompt = $("draw-prompt").value.trim();
  if (!prompt) return;
  const n = Math.max(1, Math.min(10, parseInt($("draw-n").value, 10) || 1));
  const body = { model: state.model, prompt, n, response_format: "b64_json" };
  const guidance = parseFloat($("draw-guidance").value);
  if (!Number.isNaN(guidance)) body.guidance_scale = guidance;
  const seed = parseInt($("draw-seed").value, 10);
  if (!Number.isNaN(seed)) body.seed = seed;
  const effort = $("draw-effort").value;
  const clip = $("draw-clip").checked;
  if ($("draw-sound").checked && state.config.sounds) return makeSounds(prompt, n, seed, guidance, effort);
  if (clip) body.video = true;  // an animated GIF comes back, and plays in an <img>
  else if (effort !== "none") body.reasoning_effort = effort;

  const results = $("results");
  const status = document.createElement("div");
  status.className = "status";
  status.textContent = `Drawing ${n} ${clip ? "clip" : "image"}${n > 1 ? "s" : ""}…`;
  results.replaceChildren(status);
  $("draw-go").disabled = true;
  try {
    const started = performance.now();
    const { data } = await (await api("/v1/images/generations", body)).json();
    const slug = slugOf(prompt, "image");
    status.textContent = `${prompt} — ${((performance.now() - started) / 1000).toFixed(1)} s`
      + (data[0] && data[0].note ? ` — ${data[0].note}` : "");
    data.forEach((item, i) => {
      const src = `data:${item.mime_type || "image/png"};base64,${item.b64_json}`;
      const name = `smalto-${slug}${Number.isNaN(seed) ? "" : `-seed${seed}`}-${i + 1}.${clip ? "gif" : "png"}`;
      const card = resultCard(i, src, name, image(src));
      judged(card, item.verdict, item.reading);
      if (item.revised_prompt) card.title = `planned as: ${item.revised_prompt}`;
      results.append(card);
    });
  } catch (e) {
    status.textContent = e.message;
    status.style.color = "var(--error)";
  } finally {
    $("draw-go").disabled = false;
  }
}

const slugOf = (prompt, fallback) =>
  prompt.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || fallback;

// A result in Draw mode: the picture, clip or sound, its number and a download link.
function resultCard(i, src, filename, item) {
  const card = document.createElement("figure");
  card.className = "result";
  card.style.margin = "0";
  const caption = document.createElement("figcaption");
  caption.className = "caption";
  const label = document.createElement("span");
  label.textContent = `#${i + 1}`;
  const link = document.createElement("a");
  link.href = src;
  link.download = filename;
  link.textContent = "Download";
  caption.append(label, link);
  card.append(item, caption);
  return card;
}

function judged(card, verdict, reading, heard = "reads") {
  if (verdict) {  // the verifier's judgement of this drawing against the prompt
    const v = document.createElement("div");
    v.className = `verdict ${verdict.satisfied ? "ok" : "miss"}`;
    v.textContent = verdict.satisfied ? "✓ matches the prompt" : `✗ ${verdict.failed.join("; ")}`;
    card.append(v);
  }
  if (reading) {  // what the verifier reads in the pixels (hears in the sound): what came out, not the plan
    const r = document.createElement("div");
    r.className = "reading";
    r.textContent = `${heard}: ${reading}`;
    card.append(r);
  }
}

// Sounds come one a request from /v1/audio/speech (the same seed, plus the sound's index).
async function makeSounds(prompt, n, seed, guidance, effort) {
  const results = $("results");
  const status = document.createElement("div");
  status.className = "status";
  status.textContent = `Making ${n} sound${n > 1 ? "s" : ""}…`;
  results.replaceChildren(status);
  $("draw-go").disabled = true;
  const slug = slugOf(prompt, "sound");
  try {
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const body = { model: state.model, input: prompt, voice: "shapes", response_format: "wav" };
      if (!Number.isNaN(seed)) body.seed = seed + i;
      if (!Number.isNaN(guidance)) body.guidance_scale = guidance;
      if (effort !== "none") body.reasoning_effort = effort;
      const response = await api("/v1/audio/speech", body);
      const src = URL.createObjectURL(await response.blob());
      const name = `smalto-${slug}${Number.isNaN(seed) ? "" : `-seed${seed + i}`}.wav`;
      const card = resultCard(i, src, name, sound(src));
      card.classList.add("sound-result");
      const verdict = response.headers.get("X-Smalto-Verdict");
      judged(card, verdict && JSON.parse(verdict), response.headers.get("X-Smalto-Reading"), "hears");
      results.append(card);
    }
    status.textContent = `${prompt} — ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (e) {
    status.textContent = e.message;
    status.style.color = "var(--error)";
  } finally {
    $("draw-go").disabled = false;
  }
}

// --- modes, keyboard, drag and drop

function showMode(mode) {
  for (const m of ["chat", "draw"]) {
    $(m).hidden = m !== mode;
    $(`mode-${m}`).setAttribute("aria-selected", String(m === mode));
  }
  $(mode === "chat" ? "chat-input" : "draw-prompt").focus();
}

function wire() {
  $("mode-chat").onclick = () => showMode("chat");
  $("mode-draw").onclick = () => showMode("draw");
  $("new-chat").onclick = newChat;
  $("composer").onsubmit = (e) => { e.preventDefault(); send(); };
  $("draw-form").onsubmit = (e) => { e.preventDefault(); draw(); };
  $("file-input").onchange = (e) => { [...e.target.files].forEach(attachFile); e.target.value = ""; };
  $("record").onclick = record;
  const input = $("chat-input");
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); if (!state.controller) send(); }
  });
  input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) { e.preventDefault(); files.forEach(attachFile); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.controller) state.controller.abort();
    if ((e.ctrlKey || e.metaKey) && e.shiftKey && e.key.toLowerCase() === "o") { e.preventDefault(); newChat(); }
  });
  const chat = $("chat");
  let depth = 0;  // dragenter/dragleave fire for every child element crossed
  chat.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop").hidden = false; });
  chat.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  chat.addEventListener("dragover", (e) => e.preventDefault());
  chat.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    [...e.dataTransfer.files].forEach(attachFile);
  });
}

async function init() {
  wire();
  const config = await (await fetch("/ui/config")).json();
  state.model = config.model;
  state.config = config;
  if (config.sounds) {
    $("file-input").accept = "image/*,audio/wav,audio/x-wav,audio/flac,audio/ogg,.wav,.flac,.ogg";
    $("attach-label").title = "Attach an image or a sound (WAV, FLAC, OGG)";
    $("record").hidden = !navigator.mediaDevices;
    $("draw-sound-label").hidden = false;
  }
  $("model-name").textContent = `${config.model} · ${config.image_size}×${config.image_size} images`;
  $("draw-guidance").placeholder = String(config.draw.guidance);
  $("draw-clip-label").hidden = !config.clips;
  $("examples").replaceChildren(...config.examples.map((src, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.title = `Attach example ${i + 1}`;
    b.append(image(src));
    b.onclick = () => { state.attachments.push(src); renderAttachments(); $("chat-input").focus(); };
    return b;
  }));
  if (config.needs_key && !localStorage.getItem("smalto-key")) await askForKey();
  $("chat-input").focus();
}

init().catch((e) => toast(`Could not reach the server: ${e.message}`));
