// The search page: lists the served indexes, sends the query to POST /search, shows hits.
// Texts are inserted with textContent only, never as HTML, so a document cannot run script here.
"use strict";
const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value || sessionStorage.getItem("embedtune-key");
  if (key) { h["X-API-Key"] = key; sessionStorage.setItem("embedtune-key", key); }
  return h;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    if (response.status === 401) $("key-box").open = true;
    throw new Error(body.error || response.statusText);
  }
  return body;
}

async function loadIndexes() {
  try {
    const { indexes } = await call("/indexes");
    $("index").replaceChildren(...indexes.map((ix) => {
      const option = document.createElement("option");
      option.value = ix.name;
      option.textContent = `${ix.name} (${ix.documents.toLocaleString()} docs)`;
      option.selected = ix.default;
      return option;
    }));
    $("about").textContent = `${indexes.length} index(es) served`;
  } catch (e) {
    $("about").textContent = `Cannot list the indexes: ${e.message}`;
  }
}

function hitItem(hit) {
  const li = document.createElement("li");
  li.className = "hit";
  const head = document.createElement("div");
  head.className = "hit-head";
  const id = document.createElement("span");
  id.className = "doc-id";
  id.textContent = hit.id;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(4);
  head.append(id, score);
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = hit.text;
  li.append(head, text);
  return li;
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const body = { query, k: Number($("k").value) || 10 };
  if ($("index").value) body.index = $("index").value;
  status("Searching…");
  const started = performance.now();
  try {
    const answer = await call("/search", { method: "POST", body: JSON.stringify(body) });
    const hits = answer.results[0].hits;
    $("results").replaceChildren(...hits.map(hitItem));
    status(`${hits.length} hits from ${answer.index} in ${Math.round(performance.now() - started)} ms`);
  } catch (e) {
    $("results").replaceChildren();
    status(e.message, true);
  }
}

$("search-form").addEventListener("submit", search);
$("api-key").addEventListener("change", loadIndexes);
loadIndexes();
