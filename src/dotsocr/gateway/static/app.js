// The dotsocr web page. Everything goes through the gateway's public API (see /docs), with
// the API key as a Bearer header; event streams are read with fetch, since EventSource
// cannot send headers.

const $ = (id) => document.getElementById(id);
const KEY = "dotsocr.key";
const JOBS = "dotsocr.jobs"; // ids this browser submitted, for servers without keys
const MAX_STREAMS = 4; // a browser opens six connections per host: leave some for requests
const ACTIVE = new Set(["queued", "running"]);
const STATUS_TEXT = {
  pending: "waiting", ok: "read", repaired: "repaired", fallback: "plain text", failed: "failed",
};

const state = {
  info: null,
  key: sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "",
  jobs: new Map(), // id -> {status, pages: Map("file:page" -> event), el, tiles, ...}
  chosen: [], // files waiting to be sent
  view: null, // {job, file, page}
  streams: 0,
  hidden: new Set(), // categories switched off in the legend
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError(0, "unreachable", "the gateway does not answer: is it running?");
  }
  if (response.ok) return response;
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    ({ code, message } = (await response.json()).error);
  } catch { /* not our error shape: keep the status line */ }
  if (response.status === 401) askKey(message);
  throw new ApiError(response.status, code, message);
}

const getJSON = async (path) => (await api(path)).json();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c != null && c !== false));
  return node;
}

const svg = (tag, attrs) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
};

function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function expand(ranges) {
  const out = [];
  for (const part of ranges.split(",").filter(Boolean)) {
    const [first, last] = part.split("-").map(Number);
    for (let n = first; n <= (last || first); n += 1) out.push(n);
  }
  return out;
}

function showBanner(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

// The server line in the header.
async function refreshInfo() {
  const server = $("server");
  try {
    const info = await (await fetch("/v1/info")).json();
    state.info = info;
    const engine = info.engine === "cpu" ? "embedded CPU engine" : "vLLM";
    $("server-text").replaceChildren(
      el("b", {}, info.model), ` · ${engine} · `,
      el("span", { class: "state" }, info.ready ? "ready" : "not ready"),
      ` · ${info.queued_pages} queued · ${info.reading_pages} reading`,
    );
    server.className = `server ${info.ready ? "up" : "down"}`;
    server.title = info.ready ? `dotsocr ${info.version}` : info.reason || "not ready";
    $("key-button").hidden = !info.auth;
    const select = $("upload").task; // the model's own tasks after the common three
    for (const task of info.tasks) {
      if (![...select.options].some((option) => option.value === task)) {
        select.append(el("option", { value: task }, task));
      }
    }
    return info;
  } catch {
    server.className = "server down";
    $("server-text").textContent = "gateway unreachable";
    return null;
  }
}

// The API key.
function askKey(message) {
  const dialog = $("key-dialog");
  $("key-error").textContent = message || "";
  $("key-error").hidden = !message || !state.key;
  if (dialog.open) return; // leave what is being typed alone
  $("key-input").value = state.key;
  dialog.showModal();
  $("key-input").focus();
}

async function useKey(event) {
  event.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem(KEY, state.key);
  if ($("key-remember").checked) localStorage.setItem(KEY, state.key);
  else localStorage.removeItem(KEY);
  $("key-dialog").close();
  resetJobs(); // another key sees other jobs
  await loadJobs();
}

// Upload.
function addFiles(files) {
  const limit = state.info?.limits.max_upload_bytes ?? Infinity;
  for (const file of files) {
    if (file.size > limit) {
      showBanner(`${file.name} is ${bytes(file.size)}: over this server's limit of ${bytes(limit)}.`);
      continue;
    }
    if (!state.chosen.some((f) => f.name === file.name && f.size === file.size)) state.chosen.push(file);
  }
  renderChosen();
}

function renderChosen() {
  $("chosen").replaceChildren(...state.chosen.map((file, i) => el("li", {},
    el("span", { class: "name", title: file.name }, file.name),
    el("span", { class: "muted" }, bytes(file.size)),
    el("button", {
      class: "ghost small", type: "button", "aria-label": `Remove ${file.name}`,
      onclick: () => { state.chosen.splice(i, 1); renderChosen(); },
    }, "×"),
  )));
  $("submit").disabled = !state.chosen.length;
  $("submit").textContent = state.chosen.length > 1
    ? `Read ${state.chosen.length} documents` : "Read document";
}

async function submit(event) {
  event.preventDefault();
  const form = $("upload");
  const error = $("upload-error");
  error.hidden = true;
  const total = state.chosen.reduce((sum, f) => sum + f.size, 0);
  const limits = state.info?.limits;
  if (limits && total > limits.max_upload_bytes) {
    error.textContent = `These files come to ${bytes(total)}: over the limit of ${bytes(limits.max_upload_bytes)}. Send them in smaller groups.`;
    error.hidden = false;
    return;
  }
  const body = new FormData();
  for (const file of state.chosen) body.append("files", file, file.name);
  body.append("task", form.task.value);
  if (form.pages.value.trim()) body.append("pages", form.pages.value.trim());
  body.append("dpi", form.dpi.value || "200");
  body.append("headers_footers", form.headers_footers.checked ? "true" : "false");
  $("submit").disabled = true;
  $("submit").textContent = "Sending…";
  try {
    const status = await (await api("/v1/jobs", { method: "POST", body })).json();
    remember(status.id);
    state.chosen = [];
    for (const other of state.jobs.values()) if (other.expanded) setExpanded(other, false);
    const job = upsertJob(status, { top: true, expand: true });
    const refused = status.files.filter((f) => f.error);
    if (refused.length) { // the reasons name their files
      error.textContent = refused.map((f) => `Refused: ${f.error}`).join("\n");
      error.hidden = false;
    }
    const first = status.files.find((f) => !f.error && f.pages);
    if (first) openPage(job.status.id, first.index, expand(first.selected)[0]);
  } catch (err) {
    error.textContent = `Not sent: ${err.message}`;
    error.hidden = false;
  } finally {
    renderChosen();
  }
}

// Jobs. With keys, the server lists this key's jobs; without, it lists none (everyone
// would see everyone's), so the page remembers the ids it submitted.
function remembered() {
  try { return JSON.parse(localStorage.getItem(JOBS) || "[]"); } catch { return []; }
}

function remember(id, keep = true) {
  const ids = remembered().filter((known) => known !== id);
  if (keep) ids.unshift(id);
  localStorage.setItem(JOBS, JSON.stringify(ids.slice(0, 50)));
}

async function loadJobs() {
  try {
    let statuses;
    if (state.info?.auth) {
      statuses = (await getJSON("/v1/jobs?limit=50")).jobs;
    } else {
      const found = await Promise.allSettled(remembered().map((id) => getJSON(`/v1/jobs/${id}`)));
      found.forEach((f, i) => { if (f.reason?.status === 404) remember(remembered()[i], false); });
      statuses = found.filter((f) => f.status === "fulfilled").map((f) => f.value);
    }
    const fresh = !state.jobs.size;
    statuses.reverse().forEach((status, i) => {
      upsertJob(status, { top: true, expand: fresh && i === statuses.length - 1 });
    });
  } catch (err) {
    if (err.status !== 401) showBanner(`Could not list jobs: ${err.message}`);
  }
}

function resetJobs() {
  for (const job of state.jobs.values()) job.abort?.abort();
  state.jobs.clear();
  $("jobs").replaceChildren();
  $("no-jobs").hidden = false;
  closePage();
}

function upsertJob(status, { top = false, expand: open = false, follow: go = true } = {}) {
  let job = state.jobs.get(status.id);
  if (!job) {
    job = {
      status, pages: new Map(), tiles: new Map(), failed: 0,
      expanded: false, following: false, retry: 1000,
    };
    job.el = buildJob(job);
    state.jobs.set(status.id, job);
    $("jobs")[top ? "prepend" : "append"](job.el.root);
  }
  job.status = status;
  if (open) setExpanded(job, true);
  renderJob(job);
  if (go && (ACTIVE.has(status.state) || (job.expanded && !job.loaded))) follow(job);
  $("no-jobs").hidden = state.jobs.size > 0;
  return job;
}

function buildJob(job) {
  const id = job.status.id;
  const parts = {
    name: el("span", { class: "job-name" }),
    badge: el("span", { class: "badge" }),
    bar: el("div", { class: "bar" }),
    meta: el("div", { class: "job-meta muted" }),
    files: el("div", { class: "files" }),
  };
  const remove = el("button", { class: "ghost small", type: "button", title: "Cancel and delete this job" }, "Delete");
  remove.addEventListener("click", async (event) => {
    event.stopPropagation();
    if (!remove.classList.contains("confirm")) {
      remove.classList.add("confirm");
      remove.textContent = "Sure?";
      setTimeout(() => { remove.classList.remove("confirm"); remove.textContent = "Delete"; }, 3000);
      return;
    }
    try {
      await api(`/v1/jobs/${id}`, { method: "DELETE" });
      dropJob(id);
    } catch (err) {
      if (err.status === 404) dropJob(id);
      else showBanner(`Could not delete: ${err.message}`);
    }
  });
  const downloads = el("div", { class: "job-downloads" }, "Download ",
    ...["md", "json", "zip"].map((format) => el("button", {
      class: "ghost small", type: "button", "data-format": format,
      onclick: (event) => { event.stopPropagation(); download(id, format); },
    }, { md: "Markdown", json: "JSON", zip: "ZIP" }[format])));
  const head = el("div", { class: "job-head", role: "button", tabindex: "0" },
    parts.name, parts.badge, remove);
  head.addEventListener("click", () => setExpanded(job, !job.expanded));
  const root = el("li", { class: "job", "data-job": id }, head,
    el("div", { class: "progress" }, parts.bar), parts.meta,
    el("div", { class: "job-body" }, parts.files, downloads));
  return { root, ...parts };
}

function setExpanded(job, open) {
  job.expanded = open;
  job.el.root.classList.toggle("expanded", open);
  if (open) {
    renderJob(job);
    if (!job.loaded) follow(job);
  }
}

// Many events can come at once (a finished job's pages are replayed): draw once a frame.
function scheduleRender(job) {
  if (job.drawing) return;
  job.drawing = true;
  requestAnimationFrame(() => { job.drawing = false; renderJob(job); });
}

function renderJob(job) {
  const s = job.status;
  const names = s.files.map((f) => f.name);
  job.el.name.textContent = names[0] + (names.length > 1 ? ` + ${names.length - 1} more` : "");
  job.el.name.title = names.join("\n");
  job.el.badge.textContent = s.state;
  job.el.badge.className = `badge state-${s.state}`;
  const finished = s.pages.done + s.pages.failed;
  job.el.bar.style.width = `${s.pages.total ? (100 * finished) / s.pages.total : 100}%`;
  job.el.bar.classList.toggle("has-failed", s.pages.failed > 0);
  const meta = [`${finished} of ${s.pages.total} pages`];
  if (s.pages.failed) meta.push(`${s.pages.failed} failed`);
  if (s.queue_position) meta.push(`${s.queue_position} ahead in the queue`);
  if (s.seconds != null) meta.push(`${s.seconds.toFixed(1)} s`);
  if (s.completion_tokens) meta.push(`${s.completion_tokens.toLocaleString()} tokens out`);
  if (s.error) meta.push(s.error);
  job.el.meta.textContent = meta.join(" · ");
  job.el.root.dataset.state = s.state;
  if (job.expanded && !job.el.files.childElementCount) buildFiles(job);
}

function buildFiles(job) {
  for (const file of job.status.files) {
    const title = el("div", { class: "file-name" }, el("span", { class: "name" }, file.name),
      el("span", { class: "muted" }, file.error ? "" : `${file.pages} page${file.pages === 1 ? "" : "s"}`));
    if (file.error) {
      job.el.files.append(el("div", { class: "file refused" }, title,
        el("div", { class: "error" }, `Refused: ${file.error}`)));
      continue;
    }
    const tiles = el("div", { class: "tiles" });
    for (const number of expand(file.selected)) {
      const key = `${file.index}:${number}`;
      const tile = el("button", {
        class: "tile", type: "button", "data-file": file.index, "data-page": number,
        onclick: () => openPage(job.status.id, file.index, number),
      }, String(number));
      job.tiles.set(key, tile);
      paintTile(tile, job.pages.get(key));
      tiles.append(tile);
    }
    job.el.files.append(el("div", { class: "file" }, title, tiles));
  }
  markSelected();
}

function paintTile(tile, page) {
  const status = page?.status || "pending";
  tile.classList.remove(...[...tile.classList].filter((c) => c.startsWith("st-")));
  tile.classList.add(`st-${status}`);
  tile.title = `page ${tile.dataset.page}: ${STATUS_TEXT[status]}${page?.error ? ` (${page.error})` : ""}`;
}

function markSelected() {
  document.querySelectorAll(".tile.selected").forEach((t) => t.classList.remove("selected"));
  const v = state.view;
  if (!v) return;
  const tile = state.jobs.get(v.job)?.tiles.get(`${v.file}:${v.page}`);
  tile?.classList.add("selected");
}

function dropJob(id) {
  const job = state.jobs.get(id);
  remember(id, false);
  if (!job) return;
  job.abort?.abort();
  job.el.root.remove();
  state.jobs.delete(id);
  if (state.view?.job === id) closePage();
  $("no-jobs").hidden = state.jobs.size > 0;
}

// Live progress: the job's event stream (finished pages replayed first). Past MAX_STREAMS
// open streams, a job's status is polled instead. A stream silent for three keep-alives is
// taken for dead and opened again; reconnections back off.
async function follow(job) {
  if (job.following || !state.jobs.has(job.status.id)) return;
  job.following = true;
  if (state.streams >= MAX_STREAMS) {
    setTimeout(() => poll(job), 2000);
    return;
  }
  state.streams += 1;
  const id = job.status.id;
  const abort = new AbortController();
  job.abort = abort;
  let refused = false;
  const silence = 3000 * (state.info?.keep_alive || 15);
  let watchdog = setTimeout(() => abort.abort(), silence);
  try {
    const response = await api(`/v1/jobs/${id}/events`, {
      headers: { Accept: "text/event-stream" }, signal: abort.signal,
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), silence);
      buffer += value.replaceAll("\r\n", "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (event) onEvent(job, event);
      }
    }
  } catch (err) {
    if (err.status === 404) dropJob(id);
    refused = err.status === 401 || err.status === 404; // a new key resets everything
  } finally {
    clearTimeout(watchdog);
    state.streams -= 1;
    job.following = false;
  }
  if (refused || state.jobs.get(id) !== job) return; // refused, deleted, or another key
  await refreshJob(job);
  if (state.jobs.get(id) === job && ACTIVE.has(job.status.state)) {
    setTimeout(() => follow(job), job.retry);
    job.retry = Math.min(job.retry * 2, 30_000);
  }
}

async function poll(job) {
  job.following = false;
  const before = job.status.pages.done + job.status.pages.failed;
  await refreshJob(job);
  const after = job.status.pages.done + job.status.pages.failed;
  const v = state.view;
  if (after !== before && v?.job === job.status.id && v.state === "pending") {
    openPage(v.job, v.file, v.page); // it may be read now
  }
  if (ACTIVE.has(job.status.state) || (job.expanded && !job.loaded)) follow(job);
}

function parseEvent(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { type, ...JSON.parse(data.join("\n")) } : null; // keep-alives: none
}

function onEvent(job, event) {
  job.retry = 1000;
  if (event.type === "done") {
    job.loaded = true;
    refreshInfo(); // the queue in the header moved
    return;
  }
  if (event.type !== "page") return;
  const key = `${event.file}:${event.page}`;
  const before = job.pages.get(key);
  if (before?.status === "failed") job.failed -= 1;
  if (event.status === "failed") job.failed += 1;
  job.pages.set(key, event);
  const pages = job.status.pages;
  const read = Math.max(job.pages.size, pages.done + pages.failed); // polled counts may lead
  job.status.pages = { ...pages, done: read - job.failed, failed: job.failed, pending: pages.total - read };
  if (job.status.state === "queued") job.status.state = "running";
  const tile = job.tiles.get(key);
  if (tile) paintTile(tile, event);
  scheduleRender(job);
  const v = state.view;
  if (v && v.job === job.status.id && `${v.file}:${v.page}` === key && v.state === "pending") {
    openPage(v.job, v.file, v.page);
  }
}

async function refreshJob(job) {
  try {
    upsertJob(await getJSON(`/v1/jobs/${job.status.id}`), { follow: false });
  } catch (err) {
    if (err.status === 404) dropJob(job.status.id);
  }
}

// Downloads: fetched with the key, then saved from memory.
async function download(id, format) {
  try {
    const blob = await (await api(`/v1/jobs/${id}/result?format=${format}`)).blob();
    const job = state.jobs.get(id);
    const stem = (job?.status.files[0]?.name || id).replace(/\.[^.]+$/, "");
    const link = el("a", { href: URL.createObjectURL(blob), download: `${stem}.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } catch (err) {
    showBanner(`Could not download: ${err.message}`);
  }
}

// One page: its image with the layout drawn over it, and its text.
function pagesOf(job) {
  return job.status.files.filter((f) => !f.error)
    .flatMap((f) => expand(f.selected).map((page) => ({ file: f.index, page })));
}

async function openPage(jobId, file, page) {
  const view = { job: jobId, file, page, state: "pending" };
  state.view = view;
  markSelected();
  $("placeholder").hidden = true;
  $("page").hidden = false;
  $("page").classList.add("loading");
  const job = state.jobs.get(jobId);
  const name = job?.status.files[file]?.name || "";
  const all = job ? pagesOf(job) : [];
  const at = all.findIndex((p) => p.file === file && p.page === page);
  $("page-title").textContent = name;
  $("page-sub").textContent = ` · page ${page}` + (all.length > 1 ? ` (${at + 1} of ${all.length})` : "");
  $("prev").disabled = at <= 0;
  $("next").disabled = at < 0 || at >= all.length - 1;
  const base = `/v1/jobs/${jobId}/files/${file}/pages/${page}`;
  const [data, image] = await Promise.allSettled([getJSON(base), showImage(`${base}/image`, view)]);
  if (state.view !== view) return;
  $("page").classList.remove("loading");
  if (data.status === "rejected") {
    showBanner(`Could not show page ${page}: ${data.reason.message}`);
    clearPage();
    return;
  }
  view.state = data.value.state;
  renderPage(data.value);
  if (image.status === "rejected") { // the page's text can still be read
    dropImage();
    $("frame-wait").textContent = `No image: ${image.reason.message}`;
    $("frame-wait").hidden = false;
  }
}

function dropImage() {
  const image = $("page-image");
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  image.removeAttribute("src");
  state.shownImage = null;
}

function clearPage() {
  dropImage();
  $("boxes").replaceChildren();
  $("legend").replaceChildren();
  $("page-notice").hidden = true;
  $("page-status").textContent = "";
  for (const id of ["tab-rendered", "tab-source", "tab-json", "tab-raw"]) $(id).replaceChildren();
}

async function showImage(path, view) {
  if (state.shownImage === path) return; // the same page, now read: keep its image
  const blob = await (await api(path)).blob();
  if (state.view !== view) return;
  const image = $("page-image");
  const old = image.src;
  image.src = URL.createObjectURL(blob);
  await image.decode().catch(() => {});
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  state.shownImage = path;
}

function closePage() {
  state.view = null;
  clearPage();
  $("page").hidden = true;
  $("placeholder").hidden = false;
}

function move(step) {
  const v = state.view;
  const job = v && state.jobs.get(v.job);
  if (!job) return;
  const all = pagesOf(job);
  const next = all[all.findIndex((p) => p.file === v.file && p.page === v.page) + step];
  if (next) openPage(v.job, next.file, next.page);
}

function renderPage(data) {
  const result = data.result;
  const status = result?.status ?? data.state;
  const ended = !ACTIVE.has(state.jobs.get(data.job)?.status.state ?? "running");
  const badge = $("page-status");
  badge.textContent = STATUS_TEXT[status];
  badge.className = `badge st-${status}`;
  const notice = $("page-notice");
  const notes = result?.notes?.join("; ");
  const text = {
    pending: ended
      ? "This page was not read: its job ended first."
      : "This page is waiting to be read: it appears here as soon as it is.",
    failed: `Failed: ${result?.error || "no reason given"}`,
    repaired: `The model's answer was broken and mended${notes ? `: ${notes}` : "."}`,
    fallback: `No layout came back, so the page is kept as plain text${notes ? `: ${notes}` : "."}`,
    ok: notes || "",
  }[status];
  const warned = result?.warnings?.length ? `Warning: ${result.warnings.join("; ")}` : "";
  notice.textContent = [warned, text].filter(Boolean).join(" ");
  notice.className = `notice st-${status}`;
  notice.hidden = !notice.textContent;
  if (result?.seconds != null) {
    const tokens = result.completion_tokens != null ? ` · ${result.completion_tokens} tokens out` : "";
    $("page-sub").append(` · ${result.seconds.toFixed(2)} s${tokens}`);
  }
  $("frame-wait").textContent = ended ? "Not read" : "Waiting to be read…";
  $("frame-wait").hidden = status !== "pending";
  drawBoxes(result);
  const empty = { pending: "Not read yet.", failed: "Nothing was read from this page." };
  $("tab-rendered").innerHTML = data.html?.trim() // sanitized by the gateway; the CSP forbids scripts too
    || `<p class="muted">${empty[status] || "No text on this page."}</p>`;
  $("tab-source").textContent = data.markdown ?? "";
  $("tab-json").textContent = result ? JSON.stringify(result, null, 2) : "";
  $("tab-raw").textContent = result?.raw ?? "(no answer kept)";
}

function drawBoxes(result) {
  const layer = $("boxes");
  const colors = Object.fromEntries((state.info?.categories || []).map((c) => [c.name, c.color]));
  const cells = result?.cells || [];
  layer.setAttribute("viewBox", `0 0 ${result?.width || 1} ${result?.height || 1}`);
  layer.replaceChildren(...cells.map((cell, i) => {
    const [x1, y1, x2, y2] = cell.bbox;
    const color = colors[cell.category] || "#808080";
    const rect = svg("rect", {
      x: x1, y: y1, width: Math.max(x2 - x1, 1), height: Math.max(y2 - y1, 1),
      fill: color, stroke: color, class: "box", "data-category": cell.category, "data-index": i,
    });
    rect.addEventListener("mouseenter", (event) => showTip(event, cell, color));
    rect.addEventListener("mousemove", moveTip);
    rect.addEventListener("mouseleave", hideTip);
    return rect;
  }));
  const counts = new Map();
  for (const cell of cells) counts.set(cell.category, (counts.get(cell.category) || 0) + 1);
  $("legend").replaceChildren(...[...counts].map(([category, n]) => {
    const item = el("button", {
      type: "button", class: `chip${state.hidden.has(category) ? " off" : ""}`,
      "data-category": category, title: "Show or hide these boxes",
    }, el("i", {}), `${category} ${n}`);
    item.querySelector("i").style.background = colors[category] || "#808080";
    item.addEventListener("click", () => {
      if (state.hidden.has(category)) state.hidden.delete(category);
      else state.hidden.add(category);
      item.classList.toggle("off");
      applyHidden();
    });
    return item;
  }));
  applyHidden();
}

function applyHidden() {
  for (const rect of $("boxes").children) {
    rect.classList.toggle("off", state.hidden.has(rect.dataset.category));
  }
  $("boxes").classList.toggle("off", !$("show-boxes").checked);
}

function showTip(event, cell, color) {
  const tip = $("tooltip");
  const label = el("b", {}, cell.category);
  label.style.background = color;
  const text = (cell.text || "").trim();
  tip.replaceChildren(label,
    el("div", { class: "tip-text" }, text ? (text.length > 500 ? `${text.slice(0, 500)}…` : text) : "(no text)"));
  tip.hidden = false;
  moveTip(event);
}

function moveTip(event) {
  const tip = $("tooltip");
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = event.clientY + 16 + tip.offsetHeight > window.innerHeight
    ? event.clientY - tip.offsetHeight - 10 : event.clientY + 16;
  tip.style.left = `${Math.max(8, x)}px`;
  tip.style.top = `${Math.max(8, y)}px`;
}

function hideTip() {
  $("tooltip").hidden = true;
}

function selectTab(name) {
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    $(`tab-${tab.dataset.tab}`).hidden = tab.dataset.tab !== name;
  }
}

// Wiring.
function wire() {
  $("upload").addEventListener("submit", submit);
  $("file-input").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  for (const target of [$("drop"), document.body]) {
    target.addEventListener("dragover", (event) => {
      event.preventDefault();
      $("drop").classList.add("over");
    });
  }
  document.body.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) $("drop").classList.remove("over");
  });
  document.body.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop").classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("key-button").addEventListener("click", () => askKey());
  $("key-form").addEventListener("submit", useKey);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
  $("prev").addEventListener("click", () => move(-1));
  $("next").addEventListener("click", () => move(1));
  $("show-boxes").addEventListener("change", applyHidden);
  for (const button of document.querySelectorAll("[data-download]")) {
    button.addEventListener("click", () => state.view && download(state.view.job, button.dataset.download));
  }
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea, dialog")) return;
    if (event.key === "ArrowLeft") move(-1);
    if (event.key === "ArrowRight") move(1);
  });
}

async function start() {
  wire();
  renderChosen();
  const info = await refreshInfo();
  setInterval(refreshInfo, 3000);
  setInterval(() => { // jobs sent from elsewhere with this key, or a gateway back up
    if (state.info?.auth ? state.key && !$("key-dialog").open : !state.jobs.size) loadJobs();
  }, 15_000);
  if (info?.auth && !state.key) askKey();
  else await loadJobs();
}

start();
