// polylate search page: no framework, no CDN. Text is only ever inserted as text nodes.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim() || sessionStorage.getItem("polylate-key") || "";
  if (key) { h.Authorization = "Bearer " + key; sessionStorage.setItem("polylate-key", key); }
  return h;
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const d = data.detail;
    const msg = typeof d === "string" ? d : Array.isArray(d) ? d.map((e) => e.msg).join("; ") : res.statusText;
    const err = new Error(res.status + ": " + msg);
    err.status = res.status;
    throw err;
  }
  return data;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// Offsets from the server count Unicode code points; JS strings index UTF-16 units.
const slice = (cps, start, end) => cps.slice(start, end).join("");

// Each query token's label: its words, "[MASK]" for query expansion, else its piece (the
// marker, a prefix such as e5's "query:", special tokens) without the word-start sign.
function queryTokenLabels(query, tokens) {
  const cps = Array.from(query);
  return tokens.map((t) => {
    const kind = t.kind || (t.start === null ? "other" : "text");
    const text = kind === "text" ? slice(cps, t.start, t.end)
      : kind === "expansion" ? "[MASK]" : t.piece.replace(/^[\u2581\u0120]/, "") || t.piece;
    return { text, kind, word: kind === "text" };
  });
}

function renderQueryTokens(labels) {
  const box = $("query-tokens");
  box.replaceChildren();
  labels.filter((l) => l.word).forEach((l) => {
    const s = document.createElement("span");
    s.className = "qtok";
    s.textContent = l.text;
    box.appendChild(s);
  });
}

// Document text with <mark> over each document token that some query token matched best.
function highlighted(text, explain, labels) {
  const frag = document.createDocumentFragment();
  const cps = Array.from(text);
  const byToken = new Map();
  for (const m of (explain ? explain.matches : [])) {
    if (m.start === null) continue;
    if (!byToken.has(m.doc_token)) byToken.set(m.doc_token, { start: m.start, end: m.end, from: [] });
    byToken.get(m.doc_token).from.push(m);
  }
  const spans = [...byToken.values()].sort((a, b) => a.start - b.start);
  let pos = 0;
  for (const s of spans) {
    if (s.start < pos) continue; // overlapping pieces: keep the first
    frag.appendChild(document.createTextNode(slice(cps, pos, s.start)));
    const mark = document.createElement("mark");
    const words = s.from.filter((m) => labels[m.query_token] && labels[m.query_token].word);
    const kinds = new Set(s.from.map((m) => (labels[m.query_token] || {}).kind));
    mark.className = words.length ? "match" : kinds.has("expansion") ? "expansion" : "other";
    mark.textContent = slice(cps, s.start, s.end);
    s.from.sort((a, b) => b.score - a.score);
    const label = (m) => {
      const l = labels[m.query_token];
      if (!l) return `query token ${m.query_token}`;
      return l.kind === "text" ? `query "${l.text}"` : l.kind === "expansion" ? `query [MASK] (token ${m.query_token})`
        : `query token "${l.text}" (marker or special)`;
    };
    mark.title = s.from.map((m) => `${label(m)} → "${mark.textContent}" · ${m.score.toFixed(3)}`).join("\n");
    mark.dataset.query = [...new Set(words.map((m) => labels[m.query_token].text))].join(" ");
    mark.dataset.score = Math.max(...s.from.map((m) => m.score)).toFixed(4);
    frag.appendChild(mark);
    pos = s.end;
  }
  frag.appendChild(document.createTextNode(slice(cps, pos, cps.length)));
  return frag;
}

function renderHits(result) {
  const labels = queryTokenLabels(result.query, result.query_tokens || []);
  renderQueryTokens(labels);
  const list = $("hits");
  list.replaceChildren();
  for (const hit of result.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.id = hit.id;
    li.dataset.rank = hit.rank;
    li.dataset.score = hit.score;
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    score.title = hit.explain
      ? `index score; exact MaxSim on the re-encoded text: ${hit.explain.score.toFixed(3)}`
      : "index score";
    const id = document.createElement("code");
    id.className = "id";
    id.textContent = hit.id;
    meta.append(score, id);
    const p = document.createElement("p");
    p.className = "text";
    p.appendChild(hit.text === null ? document.createTextNode("(no stored text)") : highlighted(hit.text, hit.explain, labels));
    li.append(meta, p);
    list.appendChild(li);
  }
  const explained = result.hits.filter((h) => h.explain).length;
  const notes = [];
  if (explained && explained < result.hits.filter((h) => h.text !== null).length) notes.push(`matches highlighted in the first ${explained}`);
  if (result.query_truncated) notes.push("the query is longer than the model reads: only its beginning was searched");
  status(`${result.hits.length} hit${result.hits.length === 1 ? "" : "s"} in ${result.took_ms.toFixed(0)} ms`
    + (notes.length ? ` (${notes.join("; ")})` : ""), Boolean(result.query_truncated));
  document.body.dataset.state = "done";
}

async function search() {
  const index = $("index").value, query = $("query").value.trim();
  const k = Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 10));
  if (!index || !query) {
    const listed = $("index").options.length;
    status(index ? "type a query (not only spaces)" : listed ? "no index here is searchable with this model"
      : "no index to search: create one with POST /v1/indexes", true);
    return;
  }
  const thorough = $("thorough").checked;
  const params = new URLSearchParams({ index, q: query, k });
  if (thorough) params.set("thorough", "1");
  history.replaceState(null, "", "?" + params);
  document.body.dataset.state = "searching";
  status("searching…");
  try {
    renderHits(await api(`v1/indexes/${encodeURIComponent(index)}/search`, { query, k, thorough, explain: true }));
  } catch (err) {
    $("hits").replaceChildren();
    status(err.message, true);
    document.body.dataset.state = "error";
  }
}

// The index list; a server that protects reads answers 401 until the key is given, and the
// list loads again once it is (the key field asks for it).
async function loadIndexes() {
  const keep = $("index").value;
  try {
    const { indexes } = await api("v1/indexes");
    $("index").replaceChildren();
    for (const ix of indexes) {
      const opt = document.createElement("option");
      opt.value = ix.name;
      opt.textContent = `${ix.name} (${ix.documents})`;
      if (ix.searchable === false) {  // another model's index: listed, not offered
        opt.disabled = true;
        opt.title = ix.problem;
        opt.textContent += " — not searchable here";
      }
      $("index").appendChild(opt);
    }
    if (keep && [...$("index").options].some((o) => o.value === keep)) $("index").value = keep;
    status(indexes.length ? "" : "no indexes yet: create one with POST /v1/indexes");
    return true;
  } catch (err) {
    if (err.status === 401) {
      $("auth").open = true;
      const sent = Boolean(headers().Authorization);
      sessionStorage.removeItem("polylate-key");  // refused: not sent again on the next load
      status(sent ? `${err.message}: enter another API key (then press Enter)`
        : "this server protects reads: enter an API key (then press Enter)", true);
      $("key").focus();
    } else {
      status(err.message, true);
    }
    return false;
  }
}

async function init() {
  const params = new URLSearchParams(location.search);
  try {
    const health = await api("health");
    $("model").textContent = `${health.model} · ${health.dims.join("/")}-d`;
  } catch (err) {
    status(err.message, true);
  }
  const listed = await loadIndexes();
  const wanted = params.get("index");
  if (wanted && ![...$("index").options].some((o) => o.value === wanted)) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = wanted;
    $("index").appendChild(opt);
  }
  if (wanted) $("index").value = wanted;
  if (params.get("k")) $("k").value = params.get("k");
  $("thorough").checked = params.get("thorough") === "1";
  if (params.get("q")) $("query").value = params.get("q");
  if (params.get("q") && listed) await search();
  document.body.dataset.ready = "1";
}

form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
// a key typed in: remembered for the session, and the index list fetched with it
$("key").addEventListener("keydown", async (e) => {
  if (e.key !== "Enter") return;
  e.preventDefault();
  if (!$("key").value.trim()) sessionStorage.removeItem("polylate-key");  // a cleared field forgets the key
  headers();
  if (await loadIndexes() && $("query").value.trim()) await search();
});
init();
