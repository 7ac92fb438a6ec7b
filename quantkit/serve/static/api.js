// The server's API as the page uses it: the key (kept for the browser session), /v1/models, and a streamed
// chat completion read as server-sent events. Aborting the fetch closes the connection, and the server cancels
// the sequence when its client goes.
"use strict";

const Api = (() => {
  const KEY = "quantkit.apiKey";

  class ApiError extends Error {
    constructor(status, message, type) { super(message); this.status = status; this.type = type; }
  }

  const key = () => sessionStorage.getItem(KEY);
  const setKey = (value) => value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY);

  function headers() {
    const h = {"Content-Type": "application/json"};
    if (key()) h.Authorization = `Bearer ${key()}`;
    return h;
  }

  async function failure(response) {
    let message = `${response.status} ${response.statusText}`;
    let type = "";
    try {
      const body = await response.json();
      if (body.error) { message = body.error.message; type = body.error.type; }
    } catch (e) { /* not JSON: the status says it */ }
    return new ApiError(response.status, message, type);
  }

  async function get(path) {
    const response = await fetch(path, {headers: headers()});
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  // POST /v1/chat/completions with stream: true; `on` gets {reasoning, content} deltas, then the usage and the
  // finish reason; resolves to {finish, usage, marks} ("cancelled" when stopped)
  async function streamChat(body, on, signal) {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal,
      body: JSON.stringify({...body, stream: true, stream_options: {include_usage: true}}),
    });
    if (!response.ok) throw await failure(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const end = {finish: null, usage: null, marks: null};
    let buffer = "";
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") return end;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new ApiError(chunk.error.code, chunk.error.message, chunk.error.type);
            if (chunk.usage) { end.usage = chunk.usage; on.usage && on.usage(chunk.usage); }
            if (chunk.quantkit) end.marks = chunk.quantkit;
            for (const choice of chunk.choices || []) {
              const delta = choice.delta || {};
              if (delta.reasoning_content) on.reasoning(delta.reasoning_content);
              if (delta.content) on.content(delta.content);
              if (choice.finish_reason) end.finish = choice.finish_reason;
            }
          }
        }
      }
    } catch (e) {
      if (e.name === "AbortError") { end.finish = "cancelled"; return end; }
      throw e;
    }
    return end;
  }

  return {ApiError, key, setKey, get, streamChat};
})();
