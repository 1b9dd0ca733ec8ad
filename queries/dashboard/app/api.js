// Every call goes through the platform's query API with the read key as Bearer. The key lives in this
// tab's session storage only: never in a URL, gone when the tab closes.
const KEY = "cdp.readKey";

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function url(path, params = {}) {
  const u = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, value);
  }
  return u;
}

async function failure(response) {
  let body = {};
  try { body = await response.json(); } catch { /* not JSON: say the status */ }
  const error = new ApiError(response.status, body.code || `http_${response.status}`,
    body.message || `${response.status} ${response.statusText}`);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("cdp:signed-out", { detail: error }));
  return error;
}

/** GET (or `method`) `path` with `params`; the JSON answer, or an ApiError with the platform's code and message. */
export async function api(path, { method = "GET", params, body, signal, key = getKey() } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, params), { method, headers, signal,
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", "The platform does not answer: is `cdp up` running?");
  }
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** Checks a key before keeping it: the status answers any read key, whatever its scopes. */
export async function signIn(key) {
  await api("/v1/status", { key });
  setKey(key);
}

/** Reads a server-sent event stream with the key as Bearer (EventSource cannot send a header). */
export async function stream(path, onEvent, signal) {
  const response = await fetch(url(path), { headers: { Authorization: `Bearer ${getKey()}` }, signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}
