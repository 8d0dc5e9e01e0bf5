// Turning messages into DOM: Markdown through marked, always sanitised by DOMPurify (what a
// model writes is untrusted), code highlighted by highlight.js with a copy button, thinking
// folded, and the stats line under an answer.

import { marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import hljs from "./vendor/highlight/highlight.min.js";

const PURIFY = {
  // style attributes and tags would only meet the CSP (and report a violation); images from
  // elsewhere are tracking pixels at best; forms have no business in an answer
  FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["style"],
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Markdown → sanitised HTML in `element`; `final` also highlights code and adds copy buttons. */
export function renderMarkdown(element, text, final) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true }), PURIFY);
  if (!final) return;
  for (const code of element.querySelectorAll("pre > code")) {
    hljs.highlightElement(code);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.addEventListener("click", async () => {
      await navigator.clipboard.writeText(code.textContent);
      copy.textContent = "Copied";
    });
    code.parentElement.append(copy);
  }
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

/** The element for one message; `actions` maps button labels to handlers. */
export function messageElement(message, actions) {
  const article = document.createElement("article");
  article.className = `message ${message.role}`;
  if (message.thinking) article.append(thinkingElement(message.thinking, message.stats));
  const body = document.createElement("div");
  body.className = "content";
  if (message.role === "assistant") renderMarkdown(body, message.content || "", true);
  else body.textContent = message.content;
  article.append(body);
  for (const image of message.images || []) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = "attached image";
    img.src = `data:${imageType(image)};base64,${image}`;
    article.append(img);
  }
  if (message.stats) article.append(statsElement(message.stats));
  const bar = document.createElement("div");
  bar.className = "actions";
  for (const [label, handler] of Object.entries(actions)) bar.append(button(label, "small", handler));
  article.append(bar);
  return article;
}

// the formats the daemon accepts, told apart by their base64-encoded magic bytes
const MAGIC = { "/9j/": "image/jpeg", iVBOR: "image/png", R0lG: "image/gif", UklG: "image/webp" };

function imageType(base64) {
  const hit = Object.keys(MAGIC).find((prefix) => base64.startsWith(prefix));
  return hit ? MAGIC[hit] : "application/octet-stream";
}

/** A folded block for a model's reasoning. */
export function thinkingElement(text, stats) {
  const details = document.createElement("details");
  details.className = "thinking";
  const summary = document.createElement("summary");
  const seconds = stats && stats.thinking_s;
  summary.textContent = seconds != null ? `Thought for ${seconds.toFixed(1)} s` : "Thinking…";
  const body = document.createElement("div");
  body.className = "thinking-text";
  body.textContent = text;
  details.append(summary, body);
  return details;
}

/** The line under an answer: tokens, tokens/s, time to first token (measured in the page). */
export function statsElement(stats) {
  const p = document.createElement("p");
  p.className = "stats";
  const parts = [`${stats.tokens} tokens`];
  if (stats.tokens_per_s != null) parts.push(`${stats.tokens_per_s.toFixed(1)} tokens/s`);
  if (stats.ttft_s != null) parts.push(`first token in ${stats.ttft_s.toFixed(2)} s`);
  p.textContent = parts.join(" · ");
  return p;
}

/** Stats from the final NDJSON line of a stream and the page's own clock (numbers only: what
 * the page could not measure is left out, as the history store takes no nulls). */
export function statsFrom(final, ttftSeconds, thinkingSeconds) {
  const tokens = final.eval_count || 0;
  const seconds = (final.eval_duration || 0) / 1e9;
  const stats = { tokens };
  if (seconds > 0) stats.tokens_per_s = tokens / seconds;
  if (ttftSeconds != null) stats.ttft_s = ttftSeconds;
  if (thinkingSeconds != null) stats.thinking_s = thinkingSeconds;
  return stats;
}
