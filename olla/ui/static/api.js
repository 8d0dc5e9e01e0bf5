// Every call the page makes to the daemon: same-origin credentials (the session cookie), the
// X-Olla-UI header on anything but GET (the server refuses state changes without it: a
// cross-site form cannot send a custom header), and one error type with the status and
// Retry-After the server sent.

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function init(method, body, signal) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD") headers["X-Olla-UI"] = "1";
  const options = { method, headers, credentials: "same-origin", signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  return options;
}

async function failure(response) {
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) message = typeof body.error === "string" ? body.error : body.error.message;
  } catch {
    // not JSON: keep the status text
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/** A JSON request; resolves to the parsed body (null for none), rejects with ApiError. */
export async function request(method, path, body) {
  const response = await fetch(path, init(method, body));
  if (!response.ok) throw await failure(response);
  // Ollama's routes answer some changes (DELETE /api/delete, /api/copy) 200 with no body
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** POST `path` with `body`, streamed: yields each NDJSON object; `signal` aborts (Stop). */
export async function* streamLines(path, body, signal) {
  const response = await fetch(path, init("POST", { ...body, stream: true }, signal));
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      const chunk = JSON.parse(line);
      // a stream that fails midway ends with an error line, not a status
      if (chunk.error) throw new ApiError(500, chunk.error, null);
      yield chunk;
    }
  }
}

/** POST /api/chat streamed: yields each NDJSON object; `signal` aborts (Stop). */
export function streamChat(body, signal) {
  return streamLines("/api/chat", body, signal);
}

/** What to tell the person about an error, in words they can act on. */
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error.message || error);
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.";
  switch (error.status) {
    case 429:
      return `Too many requests from your key at once.${wait} (${error.message})`;
    case 503:
      return `The server is busy.${wait} (${error.message})`;
    case 507:
      return `Not enough memory or disk for this request: choose a smaller model or unload one. (${error.message})`;
    case 401:
      return "Your session has ended: sign in again.";
    case 403:
      return `Not allowed: ${error.message}`;
    default:
      return error.message;
  }
}
