// The omnivec search page: text or file queries against /search, filters kept in the URL.
// Every piece of data is put into the page as text nodes (never as markup).

const COOKIE = "omnivec_token";
const MODALITIES = ["image", "text", "audio"];
const STOP = new Set(["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
  "or", "the", "this", "to", "with"]);

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("search-form"), q: $("q"), file: $("file"), space: $("space"), asOf: $("as-of"), k: $("k"),
  hybrid: $("hybrid"), assets: $("assets"), status: $("status"), error: $("error"), results: $("results"), welcome: $("welcome"),
  tokenPanel: $("token-panel"), tokenForm: $("token-form"), token: $("token"), tokenHint: $("token-hint"),
  forget: $("forget-token"), summary: $("store-summary"), overlay: $("drop-overlay"),
  chip: $("upload-chip"), chipName: $("upload-name"), chipPreview: $("upload-preview"), chipClear: $("upload-clear"),
};

const state = { q: "", modality: "", space: "", as_of: "", k: 12, hybrid: false, assets: false, upload: null };
const TRUE = ["1", "true", "on", "yes"];
let token = readCookie(COOKIE);
let seq = 0; // the newest search; answers to older ones are dropped
let controller = null;
let metaLoaded = false;

// ---------- small DOM helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(paths, cls = "icon") {
  const ns = "http://www.w3.org/2000/svg";
  const root = document.createElementNS(ns, "svg");
  root.setAttribute("viewBox", "0 0 24 24");
  root.setAttribute("aria-hidden", "true");
  root.setAttribute("class", cls);
  for (const d of paths) {
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d);
    root.append(p);
  }
  return root;
}

const ICONS = {
  image: ["M4 6a2 2 0 0 1 2-2h12a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2z", "m4 16 5-5 4 4 2-2 5 5",
    "M15.5 8.5h.01"],
  text: ["M6 3h8l4 4v14H6z", "M14 3v4h4", "M9 12h6M9 16h6"],
  audio: ["M9 18V6l10-2v12", "M9 18a3 3 0 1 1-3-3h3", "M19 16a3 3 0 1 1-3-3h3"],
};

// ---------- cookies, URL, fetch ----------

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) {
      try {
        return decodeURIComponent(v.join("="));
      } catch {
        return "";
      }
    }
  }
  return "";
}

// The token is percent-encoded in the cookie and in the header: a cookie cannot hold spaces, quotes,
// commas or semicolons, and fetch() refuses a header with characters outside Latin-1 (the server
// takes the token as UTF-8 bytes or percent-encoded).
function setToken(value) {
  token = value;
  if (value) document.cookie = `${COOKIE}=${encodeURIComponent(value)}; path=/; SameSite=Strict`;
  else document.cookie = `${COOKIE}=; path=/; SameSite=Strict; max-age=0`;
  ui.forget.hidden = !value;
}

function readURL() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.modality = MODALITIES.includes(p.get("modality")) ? p.get("modality") : "";
  state.space = p.get("space") || "";
  state.as_of = p.get("as_of") || "";
  const k = parseInt(p.get("k") || "", 10);
  state.k = Number.isFinite(k) && k >= 1 && k <= 200 ? k : 12;
  state.hybrid = TRUE.includes((p.get("hybrid") || "").toLowerCase());
  state.assets = TRUE.includes((p.get("assets") || "").toLowerCase());
}

function writeURL(push) {
  const p = new URLSearchParams();
  if (state.q && !state.upload) p.set("q", state.q);
  if (state.modality) p.set("modality", state.modality);
  if (state.space) p.set("space", state.space);
  if (state.as_of) p.set("as_of", state.as_of);
  if (state.k !== 12) p.set("k", String(state.k));
  if (state.hybrid) p.set("hybrid", "1");
  if (state.assets) p.set("assets", "1");
  const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
  if (url === `${location.pathname}${location.search}`) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function controlsFromState() {
  ui.q.value = state.upload ? "" : state.q;
  for (const radio of ui.form.elements.modality) radio.checked = radio.value === state.modality;
  ensureOption(ui.space, state.space);
  ui.space.value = state.space;
  ensureOption(ui.asOf, state.as_of);
  ui.asOf.value = state.as_of;
  ui.k.value = String(state.k);
  ui.hybrid.checked = state.hybrid;
  ui.assets.checked = state.assets;
  disableForAssets();
}

// Assets have no modality, versions or keyword ranking: those filters are off while "Assets" is on.
function disableForAssets() {
  for (const radio of ui.form.elements.modality) radio.disabled = state.assets;
  ui.asOf.disabled = state.assets;
  ui.hybrid.disabled = Boolean(state.upload) || state.assets;
}

function stateFromControls() {
  state.modality = ui.form.elements.modality.value;
  state.space = ui.space.value;
  state.as_of = ui.asOf.value;
  const k = parseInt(ui.k.value, 10);
  state.k = Number.isFinite(k) ? Math.min(200, Math.max(1, k)) : 12;
  ui.k.value = String(state.k);
  state.hybrid = ui.hybrid.checked;
  state.assets = ui.assets.checked;
}

function ensureOption(select, value) {
  if (!value || [...select.options].some((o) => o.value === value)) return;
  select.append(el("option", { value }, value));
}

class HttpError extends Error {
  constructor(status, detail, remedies) {
    super(detail);
    this.status = status;
    this.remedies = remedies || [];
  }
}

async function api(url, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "application/json");
  if (token) headers.set("Authorization", `Bearer ${encodeURIComponent(token)}`);
  let response;
  try {
    response = await fetch(url, { ...options, headers, credentials: "same-origin" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new HttpError(0, "The service cannot be reached. Is `omnivec api` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 401) showTokenPanel(Boolean(token));
    throw new HttpError(response.status, describe(body, response), body && body.remedies);
  }
  return body;
}

function describe(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) { // FastAPI validation errors
    return detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "query" && x !== "body").join(".") : "";
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return `The service answered ${response.status} ${response.statusText}`.trim();
}

// ---------- store summary, spaces, runs ----------

async function loadMeta() {
  const [spaces, runs] = await Promise.all([api("/spaces"), api("/runs")]);
  metaLoaded = true;
  const names = new Map();
  for (const s of spaces) {
    if (s.status !== "active") continue;
    const cur = names.get(s.name) || { modalities: new Set(), vectors: 0 };
    (s.modalities || []).forEach((m) => cur.modalities.add(m));
    cur.vectors += s.vectors || 0;
    names.set(s.name, cur);
  }
  ui.space.replaceChildren(el("option", { value: "" }, "All spaces"));
  for (const [name, info] of [...names].sort()) {
    ui.space.append(el("option", { value: name }, `${name} · ${[...info.modalities].sort().join(", ")}`));
  }
  ui.asOf.replaceChildren(el("option", { value: "" }, "Latest"));
  for (const r of runs) {
    const when = r.ended_at || r.started_at;
    const label = `${r.run_name} · ${when ? formatTime(when) : "not finished"}${r.status === "completed" ? "" : ` (${r.status})`}`;
    ui.asOf.append(el("option", { value: r.run_name, "data-testid": "as-of-run" }, label));
  }
  controlsFromState();
  const total = [...names.values()].reduce((n, s) => n + s.vectors, 0);
  const parts = [...names].map(([name, s]) => `${name} ${s.vectors.toLocaleString()}`);
  const last = runs[0] ? ` · last ingest ${formatTime(runs[0].ended_at || runs[0].started_at)}` : "";
  ui.summary.textContent = names.size
    ? `${total.toLocaleString()} vectors (${parts.join(", ")})${last}`
    : "The store is empty: run omnivec ingest PATH first";
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}

// ---------- searching ----------

function setStatus(kind, ...content) {
  ui.status.dataset.state = kind;
  ui.status.replaceChildren(...content);
  ui.results.setAttribute("aria-busy", kind === "loading" ? "true" : "false");
}

function showError(err) {
  const remedies = err.remedies && err.remedies.length
    ? el("ul", { class: "remedies" }, err.remedies.map((r) => el("li", {}, r))) : null;
  const title = err.status === 401 ? "Access token needed" : err.status ? `Error ${err.status}` : "No answer";
  ui.error.replaceChildren(el("strong", {}, title), " ", el("span", { "data-testid": "error-detail" }, err.message),
    remedies);
  ui.error.hidden = false;
}

function hasQuery() {
  return Boolean(state.upload || state.q.trim());
}

async function runSearch({ push = false } = {}) {
  writeURL(push);
  ui.error.hidden = true;
  if (!hasQuery()) {
    if (controller) controller.abort();
    ui.results.replaceChildren();
    ui.welcome.hidden = false;
    setStatus("idle");
    document.title = "omnivec · search";
    return;
  }
  ui.welcome.hidden = true;
  const mine = ++seq;
  if (controller) controller.abort();
  controller = new AbortController();
  ui.results.classList.add("stale");
  setStatus("loading", el("span", { class: "spinner", "aria-hidden": "true" }),
    state.upload ? `Searching with ${state.upload.name}…` : `Searching for “${state.q}”…`);
  const started = performance.now();
  let body;
  try {
    if (state.upload) {
      const form = new FormData();
      form.append("file", state.upload, state.upload.name);
      form.append("k", String(state.k));
      if (state.assets) form.append("assets", "true");
      if (state.modality && !state.assets) form.append("modality", state.modality);
      if (state.space) form.append("space", state.space);
      if (state.as_of && !state.assets) form.append("as_of", state.as_of);
      body = await api("/search", { method: "POST", body: form, signal: controller.signal });
    } else {
      const p = new URLSearchParams({ q: state.q, k: String(state.k) });
      if (state.assets) p.set("assets", "true");
      if (state.space) p.set("space", state.space);
      if (!state.assets) {
        if (state.modality) p.set("modality", state.modality);
        if (state.as_of) p.set("as_of", state.as_of);
        if (state.hybrid) p.set("hybrid", "true");
      }
      body = await api(`/search?${p}`, { signal: controller.signal });
    }
  } catch (err) {
    if (err.name === "AbortError" || mine !== seq) return;
    ui.results.classList.remove("stale");
    ui.results.replaceChildren();
    setStatus("error");
    showError(err);
    ui.status.dataset.seq = String(mine);
    return;
  }
  if (mine !== seq) return;
  const ms = Math.round(performance.now() - started);
  if (body.assets) renderAssets(body.hits || [], ms);
  else render(body.hits || [], ms);
  ui.status.dataset.seq = String(mine); // which search the page shows (the tests wait on it)
}

function render(hits, ms) {
  ui.results.classList.remove("stale");
  const what = state.upload ? state.upload.name : `“${state.q}”`;
  document.title = `${state.upload ? state.upload.name : state.q} · omnivec`;
  if (!hits.length) {
    ui.results.replaceChildren();
    const tips = [];
    if (state.modality) tips.push("show all modalities");
    if (state.space) tips.push("search all spaces");
    if (state.as_of) tips.push("search the latest store");
    setStatus("empty", el("span", { class: "empty-title" }, `Nothing found for ${what}`),
      tips.length ? el("span", { class: "muted" }, ` — try to ${tips.join(", or ")}.`)
        : el("span", { class: "muted" }, " — the store may hold no files of this kind yet."));
    return;
  }
  const lists = new Set(hits.flatMap((h) => Object.keys(h.ranks || {})));
  const fused = lists.size > 1;
  const terms = state.upload ? [] : queryTerms(state.q);
  ui.results.replaceChildren(...hits.map((h, i) => card(h, i + 1, fused, terms)));
  const counts = MODALITIES.map((m) => [m, hits.filter((h) => h.modality === m).length]).filter(([, n]) => n);
  setStatus("done",
    el("span", { class: "count" }, `${hits.length} result${hits.length === 1 ? "" : "s"}`),
    ` for ${what}`,
    el("span", { class: "muted" },
      ` · ${counts.map(([m, n]) => `${n} ${m}`).join(", ")} · ${fused ? `${lists.size} lists fused` : "cosine"}`
      + `${state.as_of ? ` · as of ${state.as_of}` : ""} · ${ms} ms`));
}

function renderAssets(hits, ms) {
  ui.results.classList.remove("stale");
  const what = state.upload ? state.upload.name : `“${state.q}”`;
  document.title = `${state.upload ? state.upload.name : state.q} · omnivec assets`;
  if (!hits.length) {
    ui.results.replaceChildren();
    setStatus("empty", el("span", { class: "empty-title" }, `No assets found for ${what}`),
      el("span", { class: "muted" }, " — files form an asset when they share a folder and a name, or a manifest row."));
    return;
  }
  ui.results.replaceChildren(...hits.map((a, i) => assetCard(a, i + 1)));
  setStatus("done", el("span", { class: "count" }, `${hits.length} asset${hits.length === 1 ? "" : "s"}`),
    ` for ${what}`, el("span", { class: "muted" }, ` · ${ms} ms`));
}

function assetCard(asset, position) {
  const image = asset.members.find((m) => m.modality === "image");
  const media = image
    ? el("a", { class: "card-media thumb", href: `${image.media_url}?size=1024`, target: "_blank", rel: "noopener" },
      el("img", { src: `${image.media_url}?size=320`, loading: "lazy", decoding: "async", alt: basename(image.uri),
        "data-testid": "thumb", onerror: (e) => e.target.closest(".thumb").classList.add("broken") }))
    : el("div", { class: "card-media snippet-box" }, svg(ICONS.text, "audio-art"));
  const members = el("ul", { class: "members", "data-testid": "asset-members" }, asset.members.map((m) =>
    el("li", { "data-testid": "asset-member", dataset: { modality: m.modality } },
      el("span", { class: `badge badge-${m.modality}` }, svg(ICONS[m.modality] || ICONS.text), m.modality), " ",
      el("a", { href: m.modality === "image" ? `${m.media_url}?size=1024` : m.media_url, target: "_blank",
        rel: "noopener" }, basename(m.uri)))));
  const body = el("div", { class: "card-body" },
    el("div", { class: "card-head" },
      el("span", { class: "badge badge-asset" }, "asset"),
      el("span", { class: "score", "data-testid": "score" }, `${asset.score.toFixed(3)}`)),
    el("h3", { class: "name", title: asset.key }, basename(asset.key)),
    el("p", { class: "path", title: asset.key }, el("bdi", { dir: "ltr" }, dirname(asset.key))),
    members);
  return el("li", { class: "card card-asset", "data-testid": "asset-card", dataset: { assetId: asset.asset_id } },
    el("span", { class: "position", "aria-label": `result ${position}` }, String(position)), media, body);
}

// ---------- result cards ----------

function basename(uri) {
  const clean = uri.replace(/[\\/]+$/, "");
  return clean.slice(Math.max(clean.lastIndexOf("/"), clean.lastIndexOf("\\")) + 1) || uri;
}

function dirname(uri) {
  const i = Math.max(uri.lastIndexOf("/"), uri.lastIndexOf("\\"));
  return i > 0 ? uri.slice(0, i) : "";
}

function clock(seconds) {
  const tenths = Math.round(Math.max(0, seconds || 0) * 10);
  const m = Math.floor(tenths / 600);
  const whole = Math.floor((tenths % 600) / 10);
  const tenth = tenths % 10;
  return `${m}:${String(whole).padStart(2, "0")}${tenth ? `.${tenth}` : ""}`;
}

function listLabel(name) {
  return name.startsWith("fts:") ? `keywords (${name.slice(4)})` : name;
}

function card(hit, position, fused, terms) {
  const name = basename(hit.uri);
  const li = el("li", {
    class: `card card-${hit.modality}`, "data-testid": "result-card",
    dataset: { modality: hit.modality, uri: hit.uri, itemId: hit.item_id },
  });
  let media;
  if (hit.modality === "image") {
    media = el("a", { class: "card-media thumb", href: `${hit.media_url}?size=1024`, target: "_blank", rel: "noopener",
      title: "Open a larger view" },
    el("img", { src: `${hit.media_url}?size=320`, loading: "lazy", decoding: "async", alt: name,
      "data-testid": "thumb", onerror: (e) => e.target.closest(".thumb").classList.add("broken") }));
  } else if (hit.modality === "audio") {
    media = audioBlock(hit, name);
  } else {
    media = el("div", { class: "card-media snippet-box" },
      el("blockquote", { class: "snippet", "data-testid": "snippet", cite: hit.uri }, highlight(snippet(hit.text, terms),
        terms)));
  }
  const ranks = Object.entries(hit.ranks || {}).sort((a, b) => a[1] - b[1]);
  const rankList = el("ul", { class: "ranks", "aria-label": "Ranked by", "data-testid": "ranks" },
    ranks.map(([list, rank]) => {
      const score = hit.scores && hit.scores[list];
      const label = listLabel(list);
      return el("li", { class: list.startsWith("fts:") ? "rank rank-fts" : "rank",
        title: `${label}: rank ${rank}${score !== undefined ? `, ${list.startsWith("fts:") ? "BM25" : "cosine"} ${score.toFixed(3)}` : ""}` },
      `${label} #${rank}`);
    }));
  const where = [];
  if (hit.modality === "text" && hit.char_start !== null && hit.char_end !== null) {
    where.push(`chars ${hit.char_start}–${hit.char_end}`);
  }
  if (hit.segment) where.push(`segment ${hit.segment}`);
  const body = el("div", { class: "card-body" },
    el("div", { class: "card-head" },
      el("span", { class: `badge badge-${hit.modality}`, "data-testid": "modality" },
        svg(ICONS[hit.modality] || ICONS.text), hit.modality),
      el("span", { class: "score", title: fused ? "Reciprocal rank fusion score" : "Cosine similarity",
        "data-testid": "score" }, `${fused ? "rrf" : "cos"} ${hit.score.toFixed(3)}`)),
    el("h3", { class: "name", title: hit.uri, "data-testid": "name" },
      el("a", { href: hit.modality === "image" ? `${hit.media_url}?size=1024` : hit.media_url, target: "_blank",
        rel: "noopener" }, name)),
    el("p", { class: "path", title: hit.uri }, el("bdi", { dir: "ltr" }, dirname(hit.uri))),
    el("div", { class: "card-foot" }, rankList,
      where.length ? el("span", { class: "where" }, where.join(" · ")) : null,
      el("a", { class: "details", href: hit.item_url, target: "_blank", rel: "noopener",
        title: "The stored item, its segments and errors (JSON)" }, "details")));
  li.append(el("span", { class: "position", "aria-label": `result ${position}` }, String(position)), media, body);
  return li;
}

function audioBlock(hit, name) {
  const start = hit.start_s ?? 0;
  const end = hit.end_s;
  const fragment = end !== null && end !== undefined ? `#t=${start},${end}` : `#t=${start}`;
  const audio = el("audio", { controls: true, preload: "none", src: `${hit.media_url}${fragment}`,
    "data-testid": "audio", "aria-label": `Play ${name} from ${clock(start)}` });
  audio.dataset.start = String(start);
  // Browsers that ignore the media fragment still start at the matching window on the first play.
  audio.addEventListener("play", () => {
    if (audio.currentTime + 0.25 < start || (end && audio.currentTime >= end)) audio.currentTime = start;
  }, { once: true });
  audio.addEventListener("play", () => {
    for (const other of document.querySelectorAll("audio")) if (other !== audio) other.pause();
  });
  const label = end !== null && end !== undefined
    ? `best match ${clock(start)} – ${clock(end)}` : `best match from ${clock(start)}`;
  return el("div", { class: "card-media audio-box" },
    svg(ICONS.audio, "audio-art"),
    el("span", { class: "window", "data-testid": "audio-window" }, label),
    audio);
}

function queryTerms(q) {
  const words = (q.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1 && !STOP.has(w));
  return [...new Set(words)].sort((a, b) => b.length - a.length);
}

function termPattern(terms) {
  if (!terms.length) return null;
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${escaped.join("|")})`, "giu");
}

function snippet(text, terms, max = 420) {
  const t = (text || "").replace(/\s+/g, " ").trim();
  if (t.length <= max) return t;
  const re = termPattern(terms);
  const m = re ? re.exec(t) : null;
  const at = m ? Math.max(0, m.index - 120) : 0;
  const cut = t.slice(at, at + max);
  return `${at > 0 ? "…" : ""}${cut}${at + max < t.length ? "…" : ""}`;
}

function highlight(text, terms) {
  const frag = document.createDocumentFragment();
  if (!text) {
    frag.append(el("span", { class: "muted" }, "(no text in this chunk)"));
    return frag;
  }
  const re = termPattern(terms);
  if (!re) {
    frag.append(text);
    return frag;
  }
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) frag.append(text.slice(last, m.index));
    frag.append(el("mark", {}, m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

// ---------- uploads, drag and drop, paste ----------

function setUpload(file) {
  if (ui.chipPreview.src) URL.revokeObjectURL(ui.chipPreview.src);
  state.upload = file;
  ui.chip.hidden = !file;
  ui.q.hidden = Boolean(file);
  disableForAssets();
  if (!file) {
    ui.chipPreview.removeAttribute("src");
    ui.chipPreview.hidden = true;
    ui.file.value = "";
    return;
  }
  ui.chipName.textContent = `${file.name} · ${formatBytes(file.size)}`;
  if (file.type.startsWith("image/")) {
    ui.chipPreview.src = URL.createObjectURL(file);
    ui.chipPreview.hidden = false;
  } else {
    ui.chipPreview.removeAttribute("src");
    ui.chipPreview.hidden = true;
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function searchWithFile(file) {
  if (!file) return;
  stateFromControls();
  state.q = "";
  setUpload(file);
  runSearch({ push: true });
}

let dragDepth = 0;
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");

window.addEventListener("dragenter", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth += 1;
  ui.overlay.hidden = false;
});
window.addEventListener("dragover", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = "copy";
});
window.addEventListener("dragleave", (e) => {
  if (!hasFiles(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) ui.overlay.hidden = true;
});
window.addEventListener("drop", (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  ui.overlay.hidden = true;
  searchWithFile(e.dataTransfer.files[0]);
});
window.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])].find((f) => /^(image|audio)\//.test(f.type));
  if (file) {
    e.preventDefault();
    searchWithFile(file);
  }
});

// ---------- token ----------

function showTokenPanel(refused) {
  ui.tokenPanel.hidden = false;
  ui.welcome.hidden = true;
  ui.tokenHint.textContent = refused
    ? "The token was refused. Enter the service's current token."
    : "Ask whoever runs the service for its token (OMNIVEC_API_TOKEN). It is kept in a cookie for this site only.";
  ui.tokenPanel.classList.toggle("refused", refused);
  if (document.activeElement !== ui.q) ui.token.focus();
}

ui.tokenForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const value = ui.token.value.trim();
  if (!value) return;
  setToken(value);
  ui.token.value = "";
  ui.tokenPanel.hidden = true;
  ui.welcome.hidden = hasQuery();
  await start();
});

ui.forget.addEventListener("click", () => {
  setToken("");
  location.reload();
});

// ---------- wiring ----------

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  stateFromControls();
  if (!state.upload) state.q = ui.q.value.trim();
  runSearch({ push: true });
});

ui.file.addEventListener("change", () => searchWithFile(ui.file.files[0]));

ui.chipClear.addEventListener("click", () => {
  setUpload(null);
  ui.q.value = state.q;
  ui.q.focus();
  runSearch({ push: true });
});

for (const control of [ui.space, ui.asOf, ui.hybrid, ui.assets, ...ui.form.elements.modality]) {
  control.addEventListener("change", () => {
    stateFromControls();
    disableForAssets();
    if (!state.upload) state.q = ui.q.value.trim();
    runSearch();
  });
}
ui.k.addEventListener("change", () => {
  stateFromControls();
  if (hasQuery()) runSearch();
  else writeURL(false);
});

ui.q.addEventListener("input", () => {
  if (!ui.q.value && state.q) { // the clear button of a search field
    state.q = "";
    runSearch({ push: true });
  }
});

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement
    || e.target instanceof HTMLTextAreaElement;
  if (e.key === "/" && !typing) {
    e.preventDefault();
    if (state.upload) ui.chipClear.click();
    else ui.q.focus();
  }
});

window.addEventListener("popstate", () => {
  setUpload(null);
  readURL();
  controlsFromState();
  runSearch();
});

async function start() {
  try {
    await loadMeta();
  } catch (err) {
    if (err.status === 401) return; // the token panel is up; start() runs again after it
    showError(err);
  }
  controlsFromState();
  if (hasQuery()) await runSearch();
}

setToken(token);
readURL();
controlsFromState();
ui.welcome.hidden = hasQuery();
start();
