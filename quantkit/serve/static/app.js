// The page: chat (conversations kept in localStorage) and compare (one prompt to 2–4 models, side by side).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

const STORE = {settings: "quantkit.settings", conversations: "quantkit.conversations", current: "quantkit.current"};
const DEFAULTS = {temperature: 0.6, top_p: 0.95, max_tokens: 4096, reasoning_budget: null};

const state = {
  models: [],
  settings: {...DEFAULTS, ...JSON.parse(localStorage.getItem(STORE.settings) || "{}")},
  conversations: JSON.parse(localStorage.getItem(STORE.conversations) || "[]"),
  current: localStorage.getItem(STORE.current),
  running: null,  // the AbortController of the chat generation in flight
  comparing: null,
};

// ---- errors ------------------------------------------------------------------------------------------------

function showError(error) {
  const banner = $("banner");
  banner.textContent = error.status ? `${error.message} (${error.status})` : String(error.message || error);
  banner.hidden = false;
  if (error.status === 401) askKey();
}

function clearError() { $("banner").hidden = true; }

// ---- one reply: its folded thought, its answer, its figures ------------------------------------------------

function replyView(container) {
  const root = el("div", "reply");
  const thought = el("details", "thought");
  const summary = el("summary", "thought-line", "Thinking…");
  const thoughtText = el("div", "thought-text");
  thought.append(summary, thoughtText);
  thought.hidden = true;
  const answer = el("div", "answer markdown");
  const stats = el("div", "stats");
  root.append(thought, answer, stats);
  container.append(root);

  const t = {start: performance.now(), first: null, thoughtStart: null, thoughtEnd: null, end: null};
  let reasoning = "", content = "", thoughtDeltas = 0, contentDeltas = 0, pending = false;

  function thoughtLine(tokens, done) {
    const seconds = (((t.thoughtEnd || performance.now()) - t.thoughtStart) / 1000).toFixed(1);
    summary.textContent = `${done ? "Thought" : "Thinking"} · ${tokens} tokens · ${seconds} s`;
    summary.dataset.tokens = tokens;
    summary.dataset.seconds = seconds;
  }

  function paint() {
    pending = false;
    if (reasoning) { thoughtText.textContent = reasoning; if (!t.thoughtEnd) thoughtLine(thoughtDeltas, false); }
    answer.innerHTML = Render.markdown(content);
  }

  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(paint); } };

  return {
    root,
    reasoning(text) {
      const now = performance.now();
      if (!t.first) { t.first = now; root.dataset.first = now.toFixed(1); }
      if (!t.thoughtStart) { t.thoughtStart = now; thought.hidden = false; }
      reasoning += text;
      thoughtDeltas++;
      schedule();
    },
    content(text) {
      const now = performance.now();
      if (!t.first) { t.first = now; root.dataset.first = now.toFixed(1); }
      if (t.thoughtStart && !t.thoughtEnd) { t.thoughtEnd = now; thoughtLine(thoughtDeltas, true); }
      content += text;
      contentDeltas++;
      schedule();
    },
    fail(error) {
      stats.textContent = "";
      root.append(el("div", "error", error.message || String(error)));
    },
    // the end: the server's counts replace the live ones
    finish(end) {
      t.end = performance.now();
      root.dataset.end = t.end.toFixed(1);
      paint();
      const usage = end.usage || {};
      const thoughtTokens = (usage.completion_tokens_details || {}).reasoning_tokens ?? thoughtDeltas;
      if (t.thoughtStart) {
        t.thoughtEnd = t.thoughtEnd || t.end;
        thoughtLine(thoughtTokens, true);
      }
      const tokens = usage.completion_tokens ?? thoughtDeltas + contentDeltas;
      const seconds = t.first ? (t.end - t.first) / 1000 : 0;
      const rate = seconds > 0 ? (tokens / seconds).toFixed(1) : "–";
      stats.textContent = `${tokens} tokens · ${rate} tokens/s · thought ${thoughtTokens} tokens · ${end.finish || "?"}`;
      stats.dataset.finish = end.finish || "";
      stats.dataset.tokens = tokens;
      return {content, reasoning, thought_tokens: thoughtTokens, thought_seconds: Number(summary.dataset.seconds || 0),
              tokens, finish: end.finish};
    },
    // a saved reply, shown again
    restore(saved) {
      reasoning = saved.reasoning || "";
      content = saved.content || "";
      if (reasoning) {
        thought.hidden = false;
        thoughtText.textContent = reasoning;
        summary.textContent = `Thought · ${saved.thought_tokens} tokens · ${saved.thought_seconds} s`;
        summary.dataset.tokens = saved.thought_tokens;
      }
      answer.innerHTML = Render.markdown(content);
      if (saved.finish) stats.textContent = `${saved.tokens} tokens · ${saved.finish}`;
    },
  };
}

function requestBody(model, messages) {
  const s = state.settings;
  const body = {model, messages, temperature: s.temperature, top_p: s.top_p, max_tokens: s.max_tokens};
  if (s.reasoning_budget !== null && s.reasoning_budget !== "") body.reasoning_budget = s.reasoning_budget;
  return body;
}

// ---- models ------------------------------------------------------------------------------------------------

function scores(m) {
  const parts = [];
  if (m.type) parts.push(m.type);
  if (m.bpw) parts.push(`${m.bpw} bpw`);
  if (m.size_bytes) parts.push(`${(m.size_bytes / 2 ** 20).toFixed(0)} MiB`);
  if (m.ppl != null) parts.push(`PPL ${m.ppl.toFixed(3)}`);
  if (m.mean_kld != null) parts.push(`KLD ${m.mean_kld.toFixed(4)}`);
  if (m.pass_at_1 != null) parts.push(`pass@1 ${(100 * m.pass_at_1).toFixed(1)} %`);
  return parts.join(" · ");
}

async function loadModels() {
  const list = await Api.get("/v1/models");
  state.models = list.data;
  const picker = $("model");
  picker.replaceChildren(...state.models.map((m) => {
    const option = el("option", "", m.id);
    option.value = m.id;
    option.title = scores(m);
    return option;
  }));
  const conv = currentConversation();
  if (conv && state.models.some((m) => m.id === conv.model)) picker.value = conv.model;
  const box = $("compare-models");
  box.querySelectorAll("label").forEach((n) => n.remove());
  state.models.forEach((m, i) => {
    const label = el("label", "choice");
    const check = el("input");
    check.type = "checkbox";
    check.value = m.id;
    check.checked = i < 2;
    label.append(check, ` ${m.id}`);
    label.title = scores(m);
    box.append(label);
  });
}

// ---- conversations -----------------------------------------------------------------------------------------

function save() {
  localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
  if (state.current) localStorage.setItem(STORE.current, state.current);
}

const currentConversation = () => state.conversations.find((c) => c.id === state.current);

function newConversation() {
  const conv = {id: `c${Date.now()}${Math.floor(Math.random() * 1000)}`, title: "New chat", model: $("model").value,
                messages: []};
  state.conversations.unshift(conv);
  state.current = conv.id;
  save();
  renderConversations();
  renderMessages();
  return conv;
}

function renderConversations() {
  const list = $("conversation-list");
  list.replaceChildren(...state.conversations.map((c) => {
    const item = el("li", c.id === state.current ? "active" : "");
    const open = el("button", "open", c.title);
    open.type = "button";
    open.addEventListener("click", () => {
      if (state.running) return;
      state.current = c.id;
      save();
      renderConversations();
      renderMessages();
    });
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.title = "Delete";
    remove.addEventListener("click", () => {
      if (state.running) return;
      state.conversations = state.conversations.filter((x) => x !== c);
      if (state.current === c.id) state.current = state.conversations[0] ? state.conversations[0].id : null;
      save();
      renderConversations();
      renderMessages();
    });
    item.append(open, remove);
    return item;
  }));
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = currentConversation();
  for (const m of conv ? conv.messages : []) {
    const row = el("div", `message ${m.role}`);
    box.append(row);
    if (m.role === "user") row.append(el("div", "user-text", m.content));
    else replyView(row).restore(m);
  }
  $("regenerate").disabled = !(conv && conv.messages.length);
  box.scrollTop = box.scrollHeight;
}

async function generate(conv) {
  clearError();
  const row = el("div", "message assistant");
  $("messages").append(row);
  const view = replyView(row);
  const messages = conv.messages.map((m) => ({role: m.role, content: m.content}));
  const controller = new AbortController();
  state.running = controller;
  $("send").hidden = true;
  $("stop").hidden = false;
  $("regenerate").disabled = true;
  try {
    const end = await Api.streamChat(requestBody(conv.model, messages), {
      reasoning: (text) => view.reasoning(text),
      content: (text) => { view.content(text); $("messages").scrollTop = $("messages").scrollHeight; },
    }, controller.signal);
    conv.messages.push({role: "assistant", ...view.finish(end)});
  } catch (error) {
    view.fail(error);
    showError(error);
  } finally {
    state.running = null;
    $("send").hidden = false;
    $("stop").hidden = true;
    save();
    $("regenerate").disabled = !conv.messages.length;
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.running) return;
  const conv = currentConversation() || newConversation();
  conv.model = $("model").value;
  if (!conv.messages.length) conv.title = text.slice(0, 40);
  conv.messages.push({role: "user", content: text});
  $("prompt").value = "";
  save();
  renderConversations();
  renderMessages();
  await generate(conv);
}

async function regenerate() {
  const conv = currentConversation();
  if (!conv || state.running || !conv.messages.length) return;
  if (conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  conv.model = $("model").value;
  save();
  renderMessages();
  await generate(conv);
}

// ---- compare -----------------------------------------------------------------------------------------------

async function compare(event) {
  event.preventDefault();
  clearError();
  const chosen = [...$("compare-models").querySelectorAll("input:checked")].map((c) => c.value);
  const text = $("compare-prompt").value.trim();
  if (!text || state.comparing) return;
  if (chosen.length < 2 || chosen.length > 4) { showError({message: "choose 2 to 4 models to compare"}); return; }
  const columns = $("columns");
  columns.replaceChildren();
  columns.style.setProperty("--n", chosen.length);
  const controller = new AbortController();
  state.comparing = controller;
  $("compare-send").hidden = true;
  $("compare-stop").hidden = false;
  const runs = chosen.map(async (id) => {
    const model = state.models.find((m) => m.id === id) || {id};
    const column = el("div", "column");
    column.dataset.model = id;
    column.append(el("h3", "", id), el("div", "scores", scores(model)));
    columns.append(column);
    const view = replyView(column);
    try {
      const end = await Api.streamChat(requestBody(id, [{role: "user", content: text}]),
                                       {reasoning: view.reasoning, content: view.content}, controller.signal);
      view.finish(end);
    } catch (error) {
      view.fail(error);
      if (error.status === 401) showError(error);
    }
  });
  await Promise.all(runs);
  state.comparing = null;
  $("compare-send").hidden = false;
  $("compare-stop").hidden = true;
}

// ---- settings and key --------------------------------------------------------------------------------------

function openSettings() {
  const s = state.settings;
  $("set-temperature").value = s.temperature;
  $("set-top-p").value = s.top_p;
  $("set-max-tokens").value = s.max_tokens;
  $("set-budget").value = s.reasoning_budget ?? "";
  $("settings").showModal();
}

function closeSettings() {
  if ($("settings").returnValue !== "save") return;
  const number = (id, fallback) => { const v = $(id).value; return v === "" ? fallback : Number(v); };
  state.settings = {temperature: number("set-temperature", DEFAULTS.temperature),
                    top_p: number("set-top-p", DEFAULTS.top_p), max_tokens: number("set-max-tokens", DEFAULTS.max_tokens),
                    reasoning_budget: number("set-budget", null)};
  localStorage.setItem(STORE.settings, JSON.stringify(state.settings));
}

function askKey() {
  if (!$("key-dialog").open) { $("key-input").value = ""; $("key-dialog").showModal(); }
}

function closeKey() {
  const value = $("key-input").value.trim();
  if (value) { Api.setKey(value); clearError(); }
}

function showView(name) {
  $("chat-view").hidden = name !== "chat";
  $("compare-view").hidden = name !== "compare";
  $("tab-chat").classList.toggle("active", name === "chat");
  $("tab-compare").classList.toggle("active", name === "compare");
}

// ---- start -------------------------------------------------------------------------------------------------

async function start() {
  $("chat-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.running && state.running.abort());
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => { if (!state.running) newConversation(); });
  $("compare-form").addEventListener("submit", compare);
  $("compare-stop").addEventListener("click", () => state.comparing && state.comparing.abort());
  $("tab-chat").addEventListener("click", () => showView("chat"));
  $("tab-compare").addEventListener("click", () => showView("compare"));
  $("open-settings").addEventListener("click", openSettings);
  $("settings").addEventListener("close", closeSettings);
  $("open-key").addEventListener("click", askKey);
  $("key-dialog").addEventListener("close", closeKey);
  $("model").addEventListener("change", () => {
    const conv = currentConversation();
    if (conv && !state.running) { conv.model = $("model").value; save(); }
  });
  renderConversations();
  renderMessages();
  try {
    const config = await Api.get("/webui.json");
    if (config.api_key_required) {
      $("open-key").hidden = false;
      if (!Api.key()) askKey();
    }
    await loadModels();
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
