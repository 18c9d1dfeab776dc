// The jobs page's script (app/http/page.py). No framework and nothing inline: the page's CSP
// allows scripts, styles and connections to this origin only. Every value from the API goes
// into the page as text (textContent, never HTML).
"use strict";

(() => {
  const KEY = "modelpress.apiKey"; // sessionStorage: this tab only, gone when it closes
  const STATUSES = new Set(["queued", "running", "succeeded", "failed", "cancelled"]);
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const REPORTS = new Set(["report.html", "report.json"]);
  const MAX_RECONNECTS = 30;
  const DISCOVER_MS = 5000; // how often the list is read again for new jobs

  const body = document.body;
  const authRequired = body.dataset.auth === "required";
  const limit = Number(body.dataset.limit) || 20;
  const table = document.getElementById("jobs");
  const tbody = table.tBodies[0];
  const empty = document.getElementById("empty");
  const noticeEl = document.getElementById("notice");
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const keyError = document.getElementById("key-error");
  const forget = document.getElementById("forget-key");
  const followed = new Set();

  class Unauthorized extends Error {}

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const jobPath = (id, rest) => "/v1/jobs/" + encodeURIComponent(id) + (rest || "");
  const cssName = (v) => String(v).toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 40);

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY);
    } catch {
      return null;
    }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const key = storedKey();
    if (authRequired && key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function getJson(path) {
    const r = await fetch(path, { headers: headers({ Accept: "application/json" }), cache: "no-store" });
    if (r.status === 401) throw new Unauthorized(path);
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function notice(text) {
    noticeEl.textContent = text || "";
    noticeEl.hidden = !text;
  }

  // ------------------------------------------------------------------ one row (as the template)

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function opsOf(spec) {
    if (!spec) return "";
    if (spec.recipe === "auto") return "auto";
    return (spec.steps || []).map((s) => String((s && s.op) || "?")).join("+");
  }

  // As page.py's verdict_text: the checks missed in the cell, every check in the tooltip.
  function verdictText(v) {
    if (!v) return ["", "verdict-none", ""];
    const reasons = (v.reasons || []).map(String);
    const every = reasons.join("; ");
    if (v.met === true) return ["met", "verdict-met", every];
    if (v.met === false) {
      const missed = reasons.filter((r) => r.startsWith("missed"))
        .map((r) => r.replace(/^missed: /, "")).join("; ");
      return ["not met" + (missed ? ": " + missed : ""), "verdict-missed", every];
    }
    return ["no budget", "verdict-none", every];
  }

  function when(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function link(href, text, cls, filename) {
    const a = el("a", cls, text);
    a.href = href;
    if (authRequired) {
      a.dataset.filename = filename; // a plain link would go without the key: fetch, then save
      a.addEventListener("click", download);
    }
    return a;
  }

  function renderRow(job, modelName, verdict) {
    const tr = el("tr", "job");
    tr.dataset.jobId = job.id;
    const idCell = el("td", "id");
    const idLink = link(jobPath(job.id), undefined, "", "job-" + job.id + ".json");
    idLink.title = job.id;
    idLink.append(el("code", "", job.id.slice(0, 8)));
    idCell.append(idLink);
    const model = el("td", "model", modelName);
    model.title = job.model_id;
    const status = el("td", "status");
    status.append(el("span", "badge"));
    const progress = el("td", "progress");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    progress.append(bar, " ", el("span", "message"));
    const created = el("td", "created");
    const time = el("time", "", when(job.created_at));
    time.dateTime = job.created_at;
    created.append(time);
    tr.append(idCell, model, el("td", "ops", opsOf(job.spec)), status, progress,
      el("td", "verdict verdict-none"), el("td", "links"), created);
    applyJob(tr, job);
    setVerdict(tr, verdict);
    return tr;
  }

  function applyJob(tr, job) {
    setStatus(tr, job.status);
    const p = job.progress || {};
    if (job.status === "failed" && job.error) {
      setProgress(tr, p.fraction);
      setMessage(tr, [job.error.title, job.error.detail].filter(Boolean).join(": "));
    } else {
      setProgress(tr, p.fraction, p.message);
    }
    setLinks(tr, job);
  }

  function setStatus(tr, value) {
    const status = STATUSES.has(value) ? value : "unknown";
    tr.dataset.status = status;
    const badge = tr.querySelector(".status .badge");
    badge.className = "badge status-" + status;
    badge.textContent = status;
  }

  function setProgress(tr, fraction, message) {
    const f = Number(fraction);
    if (fraction !== undefined && fraction !== null && Number.isFinite(f)) {
      tr.querySelector(".progress progress").value = Math.min(Math.max(f, 0), 1);
    }
    if (message !== undefined && message !== null) setMessage(tr, message);
  }

  function setMessage(tr, text) {
    tr.querySelector(".progress .message").textContent = String(text);
  }

  function setVerdict(tr, verdict) {
    const [text, cls, every] = verdictText(verdict);
    const cell = tr.querySelector(".verdict");
    cell.className = "verdict " + cls;
    cell.textContent = text;
    cell.title = every;
  }

  function setLinks(tr, job) {
    const cell = tr.querySelector(".links");
    const arts = job.artifacts || [];
    cell.replaceChildren();
    if (arts.some((a) => a.name === "report.html")) {
      cell.append(link(jobPath(job.id, "/report.html"), "report", "", "report-" + job.id + ".html"), " ",
        link(jobPath(job.id, "/report"), "report.json", "", "report-" + job.id + ".json"));
    }
    for (const a of arts) {
      if (REPORTS.has(a.name)) continue;
      const href = jobPath(job.id, "/artifacts/" + encodeURIComponent(a.name));
      cell.append(" ", link(href, a.name, "artifact kind-" + cssName(a.kind), a.name));
    }
  }

  // ------------------------------------------------------------------ live progress

  // Server-sent events read from a fetch body (EventSource cannot send the Bearer header).
  async function* sseEvents(stream) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let carry = "";
    let event = "message";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      let chunk = carry + value;
      carry = "";
      if (chunk.endsWith("\r")) { // a CRLF split across chunks is one line end, not two
        carry = "\r";
        chunk = chunk.slice(0, -1);
      }
      buffer += chunk.replace(/\r\n?/g, "\n");
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line === "") {
          if (data.length) yield { event, id, data: data.join("\n") };
          event = "message";
          data = [];
        } else if (!line.startsWith(":")) { // a comment line is the heartbeat
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
          else if (field === "id") id = val;
        }
      }
    }
  }

  function onEvent(tr, name, data, state) {
    if (name === "status") {
      setStatus(tr, data.status);
      if (data.status === "failed" && data.error) {
        setMessage(tr, [data.error.title, data.error.detail].filter(Boolean).join(": "));
      }
      if (TERMINAL.has(data.status)) state.done = true;
    } else if (name === "progress") {
      setProgress(tr, data.fraction, data.message);
    } else if (name === "step") {
      const step = [data.name || data.op, data.phase].filter(Boolean).join(" ");
      if (step) setMessage(tr, "step " + (Number(data.index) + 1 || "") + ": " + step);
    } else if (name === "log") {
      tr.querySelector(".progress .message").title = String(data.message || "");
    } else if (name === "verdict") {
      setVerdict(tr, data);
      state.verdict = true;
    }
  }

  async function stream(tr, state) {
    const controller = new AbortController();
    const h = headers({ Accept: "text/event-stream" });
    if (state.last !== null) h["Last-Event-ID"] = state.last;
    const r = await fetch(jobPath(tr.dataset.jobId, "/events"), { headers: h, cache: "no-store", signal: controller.signal });
    if (r.status === 401) throw new Unauthorized("events");
    if (!r.ok || !r.body) return "unavailable"; // no stream here: the caller polls instead
    try {
      for await (const ev of sseEvents(r.body)) {
        if (ev.id !== null) state.last = ev.id;
        let data = {};
        try {
          data = JSON.parse(ev.data);
        } catch {
          continue;
        }
        onEvent(tr, ev.event, data || {}, state);
        if (state.done) break;
      }
    } finally {
      controller.abort(); // the stream ends after the terminal status; never keep it open
    }
    return "ended";
  }

  async function poll(tr, state) {
    while (!state.done) {
      const job = await getJson(jobPath(tr.dataset.jobId));
      applyJob(tr, job);
      if (TERMINAL.has(job.status)) state.done = true;
      else await sleep(2000);
    }
  }

  async function follow(tr) {
    const id = tr.dataset.jobId;
    if (followed.has(id)) return;
    followed.add(id);
    const state = { last: null, done: false, verdict: false };
    try {
      for (let attempt = 0; attempt < MAX_RECONNECTS && !state.done; attempt++) {
        let result = "error";
        try {
          result = await stream(tr, state);
        } catch (e) {
          if (e instanceof Unauthorized) throw e; // else the connection broke: resume below
        }
        if (result === "unavailable") await poll(tr, state);
        else if (!state.done) await sleep(Math.min(1000 * (attempt + 1), 10000));
      }
      const job = await getJson(jobPath(id)); // the artifacts and error of the finished job
      applyJob(tr, job);
      if (job.status === "succeeded" && !state.verdict) setVerdict(tr, await reportVerdict(job));
    } catch (e) {
      if (e instanceof Unauthorized) askKey("The key was refused (401): enter it again.");
      else setMessage(tr, "live progress stopped: " + e.message);
    } finally {
      followed.delete(id);
    }
  }

  function followLive() {
    for (const tr of tbody.rows) {
      if (!TERMINAL.has(tr.dataset.status)) follow(tr);
    }
  }

  async function reportVerdict(job) {
    if (!(job.artifacts || []).some((a) => a.name === "report.json")) return null;
    try {
      return (await getJson(jobPath(job.id, "/report"))).verdict || null;
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      return null;
    }
  }

  // ------------------------------------------------------------------ auth on: key, list, links

  async function download(ev) {
    ev.preventDefault();
    const a = ev.currentTarget;
    try {
      const r = await fetch(a.href, { headers: headers(), cache: "no-store" });
      if (r.status === 401) return askKey("The key was refused (401): enter it again.");
      if (!r.ok) return notice(a.textContent + ": HTTP " + r.status);
      const url = URL.createObjectURL(await r.blob());
      const save = el("a");
      save.href = url;
      save.download = a.dataset.filename || "download";
      body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      notice(a.textContent + ": " + e.message);
    }
  }

  function askKey(message) {
    try {
      sessionStorage.removeItem(KEY);
    } catch {
      // storage blocked: the form still works for this page view
    }
    table.hidden = true;
    empty.hidden = true;
    forget.hidden = true;
    form.hidden = false;
    keyError.textContent = message || "";
    keyError.hidden = !message;
    input.focus();
  }

  async function modelNames(items) {
    const names = new Map();
    await Promise.all([...new Set(items.map((j) => j.model_id))].map(async (id) => {
      try {
        names.set(id, (await getJson("/v1/models/" + encodeURIComponent(id))).name || id);
      } catch (e) {
        if (e instanceof Unauthorized) throw e;
        names.set(id, id); // deleted or expired since: shown by its id
      }
    }));
    return names;
  }

  let loading = false;
  async function load() {
    notice("Loading jobs…");
    loading = true;
    try {
      const page = await getJson("/v1/jobs?limit=" + limit);
      const items = page.items || [];
      const names = await modelNames(items);
      const verdicts = await Promise.all(
        items.map((j) => (j.status === "succeeded" ? reportVerdict(j) : null)));
      tbody.replaceChildren(...items.map((j, i) => renderRow(j, names.get(j.model_id), verdicts[i])));
      form.hidden = true;
      forget.hidden = false;
      table.hidden = items.length === 0;
      empty.hidden = items.length > 0;
      notice("");
      followLive();
    } catch (e) {
      notice("");
      if (e instanceof Unauthorized) askKey("That key was refused (401): check it and try again.");
      else notice("Could not load the jobs: " + e.message);
    } finally {
      loading = false;
    }
  }

  // Jobs submitted after the page loaded appear at the top without a reload.
  let discovering = false;
  async function discover() {
    if (discovering || loading || !form.hidden || (authRequired && !storedKey())) return;
    discovering = true;
    try {
      const page = await getJson("/v1/jobs?limit=" + limit);
      const known = new Set([...tbody.rows].map((r) => r.dataset.jobId));
      const fresh = (page.items || []).filter((j) => !known.has(j.id));
      if (fresh.length === 0) return;
      const names = await modelNames(fresh);
      const verdicts = await Promise.all(
        fresh.map((j) => (j.status === "succeeded" ? reportVerdict(j) : null)));
      tbody.prepend(...fresh.map((j, i) => renderRow(j, names.get(j.model_id), verdicts[i])));
      while (tbody.rows.length > limit) tbody.deleteRow(-1);
      table.hidden = false;
      empty.hidden = true;
      followLive();
    } catch (e) {
      if (e instanceof Unauthorized) askKey("The key was refused (401): enter it again.");
    } finally {
      discovering = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault(); // form-action 'none': nothing is ever submitted, the key stays here
    const key = input.value.trim();
    if (!key) return;
    try {
      sessionStorage.setItem(KEY, key);
    } catch {
      return notice("This browser refuses sessionStorage: the key cannot be kept.");
    }
    input.value = "";
    keyError.hidden = true;
    load();
  });

  forget.addEventListener("click", () => askKey(""));

  if (!authRequired) followLive();
  else if (storedKey()) load();
  else askKey("");
  setInterval(discover, DISCOVER_MS);
})();
