// The hlrm page: plain DOM, no framework, no build step. Every text from the API is inserted
// with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const liked = new Map(); // item id -> label

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function itemLabel(row) {
  return row.title ? row.title : row.item_id;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function topK() {
  return Number($("k").value);
}

function wantExplain() {
  return $("explain").checked;
}

// ---- results ---------------------------------------------------------------------------------
const MODULE_NAMES = {
  user_attention: "history behind it (user attention)",
  item_attention: "item attention",
  history_attention: "history behind it (attention)",
  history_effect: "history that raised the score most (share of the pool's effect)",
  related: "your items with the closest relation (cosine)",
};

// A bar and its number: an attention weight, a history item's share of the pool's effect on
// the score, or LRML's relation similarity (hlrm.runs._label_explanation).
function explanationValue(row) {
  if (row.weight !== undefined) return { bar: row.weight, text: row.weight.toPrecision(4) };
  if (row.share !== undefined) {
    return { bar: Math.abs(row.share), text: `${(100 * row.share).toFixed(1)}%` };
  }
  return { bar: row.similarity, text: row.similarity.toPrecision(4) };
}

function explanationRowLabel(row) {
  if (row.item_id !== undefined) return itemLabel(row);
  if (row.slot === "user") return "(the user)";
  if (row.slot === "target") return "(the item itself)";
  if (row.slot === "padding") return "(padding)";
  return `slot ${row.slot}`;
}

function renderExplanation(explanation) {
  const box = element("div", "explanation");
  for (const [module, rows] of Object.entries(explanation)) {
    const block = element("div", "module");
    block.dataset.module = module;
    let heading = MODULE_NAMES[module] || module;
    if (rows.length && rows[0].uniform !== undefined) {
      heading += ` (uniform ${rows[0].uniform.toPrecision(4)})`;
    }
    block.appendChild(element("h4", null, heading));
    // a bar is the weight itself (the module's weights sum to 1 over all its entries, of which
    // the heaviest few are shown): uniform attention looks uniform
    for (const row of rows) {
      const value = explanationValue(row);
      const line = element("div", "bar-row");
      line.appendChild(element("span", "bar-label", explanationRowLabel(row)));
      const bar = element("span", "bar");
      const fill = element("span", "fill");
      fill.style.width = `${Math.max(0, Math.min(1, value.bar)) * 100}%`;
      bar.appendChild(fill);
      line.appendChild(bar);
      line.appendChild(element("span", "bar-weight", value.text));
      block.appendChild(line);
    }
    box.appendChild(block);
  }
  return box;
}

function renderResults(title, items) {
  $("results-title").textContent = title;
  const list = $("results");
  list.replaceChildren();
  for (const item of items) {
    const entry = element("li", "rec");
    const head = element("div", "rec-head");
    head.appendChild(element("span", "rank", item.rank));
    head.appendChild(element("span", "title", itemLabel(item)));
    if (item.title) head.appendChild(element("span", "item-id", item.item_id));
    head.appendChild(element("span", "score", `score ${item.score.toFixed(4)}`));
    const similar = element("button", "more-like", "similar");
    similar.type = "button";
    similar.addEventListener("click", () => showSimilar(item.item_id, itemLabel(item)));
    head.appendChild(similar);
    entry.appendChild(head);
    if (item.explanation) entry.appendChild(renderExplanation(item.explanation));
    list.appendChild(entry);
  }
  setStatus(items.length ? "" : "no recommendations", false);
}

async function run(title, request) {
  setStatus("scoring…", false);
  try {
    const body = await request();
    renderResults(title, body.items);
  } catch (error) {
    $("results").replaceChildren();
    setStatus(error.message, true);
  }
}

// ---- the three ways in -------------------------------------------------------------------------
function recommendForUser(event) {
  event.preventDefault();
  const user = $("user").value.trim();
  if (!user) return;
  const query = new URLSearchParams({ user, k: topK(), explain: wantExplain() });
  run(`Top ${topK()} for user ${user}`, () => api(`/recommend?${query}`));
}

function recommendForLiked() {
  const items = Array.from(liked.keys());
  const body = JSON.stringify({ items, k: topK(), explain: wantExplain() });
  run(`Top ${topK()} for someone who likes ${items.length} item(s)`, () =>
    api("/recommend", { method: "POST", headers: { "Content-Type": "application/json" }, body }),
  );
}

function showSimilar(itemId, label) {
  const query = new URLSearchParams({ item: itemId, k: topK() });
  run(`Similar to ${label}`, () => api(`/similar-items?${query}`));
}

function renderLiked() {
  const chips = $("liked");
  chips.replaceChildren();
  for (const [itemId, label] of liked) {
    const chip = element("li", "chip", label);
    const remove = element("button", "remove", "×");
    remove.type = "button";
    remove.title = "remove";
    remove.addEventListener("click", () => {
      liked.delete(itemId);
      renderLiked();
    });
    chip.appendChild(remove);
    chips.appendChild(chip);
  }
  $("liked-empty").hidden = liked.size > 0;
  $("recommend-items").disabled = liked.size === 0;
}

function searchBox(inputId, resultsId, actionLabel, onPick) {
  let timer = null;
  let latest = 0;
  const search = async () => {
    const ticket = ++latest;
    const query = new URLSearchParams({ query: $(inputId).value, limit: 10 });
    try {
      const body = await api(`/items?${query}`);
      if (ticket !== latest) return; // a newer search is on its way
      const list = $(resultsId);
      list.replaceChildren();
      for (const item of body.items) {
        const entry = element("li", "found");
        entry.appendChild(element("span", "title", itemLabel(item)));
        if (item.title) entry.appendChild(element("span", "item-id", item.item_id));
        const pick = element("button", "pick", actionLabel);
        pick.type = "button";
        pick.addEventListener("click", () => onPick(item));
        entry.appendChild(pick);
        list.appendChild(entry);
      }
    } catch (error) {
      setStatus(error.message, true);
    }
  };
  $(inputId).addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  $(inputId).closest("form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  return search;
}

function switchTo(tab) {
  for (const other of document.querySelectorAll(".tab")) {
    other.classList.toggle("active", other === tab);
    $(other.dataset.panel).hidden = other !== tab;
  }
}

async function loadModel() {
  try {
    const info = await api("/model");
    const metric = info.metrics["ndcg@10"];
    const quality = metric === undefined ? "" : `, test NDCG@10 ${metric.toFixed(4)}`;
    $("model-info").textContent =
      `${info.model} on ${info.dataset}: ${info.users} users, ${info.items} items${quality}` +
      ` · ${info.retrieval === "exact" ? "exact ranking" : "approximate retrieval"}` +
      ` · hlrm ${info.hlrm_version}`;
    const examples = $("example-users");
    for (const user of info.example_users) {
      const option = element("option");
      option.value = user;
      examples.appendChild(option);
    }
    if (!$("user").value && info.example_users.length) $("user").placeholder = `e.g. ${info.example_users[0]}`;
    if (!info.explains) $("explain").disabled = true;
  } catch (error) {
    setStatus(`cannot reach the server: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => switchTo(tab));
  }
  $("user-form").addEventListener("submit", recommendForUser);
  $("recommend-items").addEventListener("click", recommendForLiked);
  const searchLiked = searchBox("item-search", "item-results", "like", (item) => {
    liked.set(item.item_id, itemLabel(item));
    renderLiked();
  });
  const searchSimilar = searchBox("similar-search", "similar-results", "similar", (item) =>
    showSimilar(item.item_id, itemLabel(item)),
  );
  searchLiked();
  searchSimilar();
  loadModel();
});
