// One conversation: its messages on screen, sending, streaming an answer from /api/chat with
// Stop (an AbortController: the daemon sees the connection close and cancels the sequence),
// edit-and-resend and regenerate.

import { streamChat } from "./api.js";
import { messageElement, renderMarkdown, statsFrom, thinkingElement } from "./render.js";

/** A chat as the history routes store it; `id` is null until it is first saved. */
export function emptyChat(model) {
  return { id: null, title: "", model, system: "", options: {}, messages: [] };
}

export class Conversation {
  /**
   * @param ui {messages, send, stop}: the elements it draws in and toggles
   * @param hooks {model(), loaded(name), saved(chat), failed(error), busy(flag)}
   */
  constructor(ui, hooks) {
    this.ui = ui;
    this.hooks = hooks;
    this.chat = emptyChat("");
    this.controller = null;
  }

  get busy() {
    return this.controller !== null;
  }

  /** Show `chat` (ending any answer in progress). */
  load(chat) {
    this.stop();
    this.chat = chat;
    this.render();
  }

  render() {
    const items = this.chat.messages.map((m, i) => messageElement(m, this.actions(i)));
    this.ui.messages.replaceChildren(...items);
    this.ui.messages.scrollTop = this.ui.messages.scrollHeight;
  }

  actions(index) {
    const message = this.chat.messages[index];
    if (message.role === "user") return { Edit: () => this.edit(index) };
    if (index === this.chat.messages.length - 1) return { Regenerate: () => this.regenerate() };
    return {};
  }

  /** Add the person's message and stream the answer. */
  async send(text, images) {
    if (this.busy) return;
    const message = { role: "user", content: text };
    if (images.length) message.images = images;
    this.chat.messages.push(message);
    if (!this.chat.title) this.chat.title = text.slice(0, 60) || "Image";
    this.render();
    await this.generate();
  }

  /** Drop the last answer and ask again. */
  async regenerate() {
    if (this.busy) return;
    const last = this.chat.messages[this.chat.messages.length - 1];
    if (last && last.role === "assistant") this.chat.messages.pop();
    this.render();
    await this.generate();
  }

  /** Turn message `index` into an editor; sending it drops everything after it. */
  edit(index) {
    if (this.busy) return;
    const article = this.ui.messages.children[index];
    const editor = document.createElement("textarea");
    editor.className = "editor";
    editor.value = this.chat.messages[index].content;
    const resend = document.createElement("button");
    resend.type = "button";
    resend.textContent = "Send";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => this.render());
    resend.addEventListener("click", async () => {
      const edited = { ...this.chat.messages[index], content: editor.value };
      this.chat.messages = [...this.chat.messages.slice(0, index), edited];
      this.render();
      await this.generate();
    });
    const bar = document.createElement("div");
    bar.className = "actions";
    bar.append(resend, cancel);
    article.replaceChildren(editor, bar);
    editor.focus();
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  request() {
    const messages = this.chat.system ? [{ role: "system", content: this.chat.system }] : [];
    for (const m of this.chat.messages) {
      const sent = { role: m.role, content: m.content };
      if (m.images) sent.images = m.images;
      if (m.thinking) sent.thinking = m.thinking;
      messages.push(sent);
    }
    return { model: this.chat.model, messages, options: this.chat.options };
  }

  async generate() {
    this.chat.model = this.hooks.model();
    const view = new AnswerView(this.ui.messages, this.hooks.loaded(this.chat.model), this.chat.model);
    this.controller = new AbortController();
    this.hooks.busy(true);
    let answer = null;
    try {
      answer = await view.stream(streamChat(this.request(), this.controller.signal));
    } catch (error) {
      if (error.name === "AbortError") answer = view.partial();
      else this.hooks.failed(error);
    } finally {
      this.controller = null;
      this.hooks.busy(false);
    }
    if (answer && (answer.content || answer.thinking)) this.chat.messages.push(answer);
    this.render();
    if (answer) await this.hooks.saved(this.chat);
  }
}

/** The answer being streamed: a placeholder until the first token, then Markdown re-rendered at
 * most once a frame (re-parsing the whole text each chunk is cheap at chat lengths). */
class AnswerView {
  constructor(container, loaded, model) {
    this.article = document.createElement("article");
    this.article.className = "message assistant pending";
    this.body = document.createElement("div");
    this.body.className = "content";
    this.body.textContent = loaded ? "…" : `Loading ${model}…`;
    this.article.append(this.body);
    container.append(this.article);
    container.scrollTop = container.scrollHeight;
    this.container = container;
    this.answer = { role: "assistant", content: "", thinking: "" };
    this.thinkingView = null;
    this.queued = false;
  }

  async stream(chunks) {
    const start = performance.now();
    let first = null;
    let thinkingFrom = null;
    let thinkingTo = null;
    let final = null;
    for await (const chunk of chunks) {
      const m = chunk.message || {};
      const now = performance.now();
      if (first === null && (m.content || m.thinking)) {
        first = now;
        this.article.classList.remove("pending");
        this.body.textContent = "";
      }
      if (m.thinking) {
        if (thinkingFrom === null) thinkingFrom = now;
        this.answer.thinking += m.thinking;
        this.showThinking();
      }
      if (m.content) {
        if (thinkingFrom !== null && thinkingTo === null) thinkingTo = now;
        this.answer.content += m.content;
        this.schedule();
      }
      if (chunk.done) final = chunk;
    }
    const answer = this.partial();
    if (final) {
      const ttft = first === null ? null : (first - start) / 1000;
      const thought = thinkingFrom === null ? null : ((thinkingTo ?? performance.now()) - thinkingFrom) / 1000;
      answer.stats = statsFrom(final, ttft, thought);
    }
    return answer;
  }

  /** The answer so far, as a message (what Stop keeps). */
  partial() {
    const answer = { ...this.answer };
    if (!answer.thinking) delete answer.thinking;
    return answer;
  }

  showThinking() {
    if (!this.thinkingView) {
      this.thinkingView = thinkingElement("", null);
      this.article.insertBefore(this.thinkingView, this.body);
    }
    this.thinkingView.querySelector(".thinking-text").textContent = this.answer.thinking;
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      renderMarkdown(this.body, this.answer.content, false);
      this.container.scrollTop = this.container.scrollHeight;
    });
  }
}
