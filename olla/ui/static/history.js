// The chats list, kept on the server per user (/ui/api/chats): list and search, open, save,
// rename, delete, export, import. A server without the history routes (404) leaves the page usable,
// with a note that chats are not kept.

import { ApiError, describe, request } from "./api.js";

const BASE = "/ui/api/chats";

export class History {
  /**
   * @param ui {list, search, note}
   * @param hooks {open(chat), current(): id|null, removed(id)}
   */
  constructor(ui, hooks) {
    this.ui = ui;
    this.hooks = hooks;
    this.available = true;
    let timer = null;
    ui.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), 250);
    });
  }

  async refresh() {
    const q = this.ui.search.value.trim();
    try {
      const body = await request("GET", q ? `${BASE}?q=${encodeURIComponent(q)}` : BASE);
      this.ui.note.textContent = "";
      this.draw(body.chats);
    } catch (error) {
      this.unavailable(error);
    }
  }

  unavailable(error) {
    if (error instanceof ApiError && error.status === 404) {
      this.available = false;
      this.ui.note.textContent = "This server keeps no chat history.";
    } else {
      this.ui.note.textContent = describe(error);
    }
  }

  draw(chats) {
    const items = chats.map((chat) => {
      const li = document.createElement("li");
      if (chat.id === this.hooks.current()) li.className = "current";
      const open = link(chat.title || "Untitled", "title", () => this.open(chat.id));
      open.title = `${chat.model} · ${chat.updated_at}`;
      const menu = document.createElement("span");
      menu.className = "chat-actions";
      menu.append(
        link("Rename", "small", () => this.rename(chat)),
        link("Delete", "small", () => this.remove(chat)),
        download(chat.id, "json"),
        download(chat.id, "markdown"),
      );
      li.append(open, menu);
      return li;
    });
    this.ui.list.replaceChildren(...items);
  }

  async open(id) {
    const chat = await request("GET", `${BASE}/${encodeURIComponent(id)}`);
    this.hooks.open({ system: "", options: {}, messages: [], ...chat, id });
    await this.refresh();
  }

  /** Create or replace `chat` on the server; sets chat.id the first time. */
  async save(chat) {
    if (!this.available) return;
    const body = {
      title: chat.title,
      model: chat.model,
      system: chat.system,
      options: chat.options,
      messages: chat.messages,
    };
    if (chat.id) await request("PUT", `${BASE}/${encodeURIComponent(chat.id)}`, body);
    else chat.id = (await request("POST", BASE, body)).id;
    await this.refresh();
  }

  /** Import an exported JSON file (one chat or a list); opens the first one imported. */
  async importFile(file) {
    let body;
    try {
      body = JSON.parse(await file.text());
    } catch {
      this.ui.note.textContent = `${file.name} is not JSON: import takes a chat exported as JSON.`;
      return;
    }
    const { ids } = await request("POST", `${BASE}/import`, body);
    if (ids.length) await this.open(ids[0]);
    else await this.refresh();
  }

  async rename(chat) {
    const title = window.prompt("New title", chat.title);
    if (title === null || !title.trim()) return;
    await request("PUT", `${BASE}/${encodeURIComponent(chat.id)}`, { title: title.trim() });
    await this.refresh();
  }

  async remove(chat) {
    if (!window.confirm(`Delete “${chat.title}”?`)) return;
    await request("DELETE", `${BASE}/${encodeURIComponent(chat.id)}`);
    this.hooks.removed(chat.id);
    await this.refresh();
  }
}

function link(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function download(id, format) {
  const a = document.createElement("a");
  a.className = "small";
  a.href = `${BASE}/${encodeURIComponent(id)}/export?format=${format}`;
  a.download = "";
  a.textContent = format === "json" ? "JSON" : "MD";
  a.title = `Export as ${format}`;
  return a;
}
