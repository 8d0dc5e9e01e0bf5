// Model management for admins (or everyone, with no keys): a "Models" dialog that pulls a model
// with /api/pull's streamed progress and deletes one after a confirmation. The page builds it only
// when the session says admin, so a read-only key's page has none of it (the daemon refuses those
// routes to such a key anyway: 403).

import { describe, request, streamLines } from "./api.js";

/** A new element with its text and attributes. */
function make(tag, { text, ...attributes } = {}) {
  const element = document.createElement(tag);
  if (text !== undefined) element.textContent = text;
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

/** Bytes in the units a model's size is read in. */
export function size(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** One /api/pull line in words: its status, and the bytes done when it counts them. */
export function progressText(line) {
  if (!line.total) return line.status;
  const percent = Math.floor((100 * (line.completed || 0)) / line.total);
  return `${line.status}: ${size(line.completed || 0)} of ${size(line.total)} (${percent}%)`;
}

export class ModelAdmin {
  /** `models` is the picker (models.js); `changed(name)` runs when the chosen model went away. */
  constructor(models, changed) {
    this.models = models;
    this.changed = changed;
    this.controller = null;
  }

  /** Add the "Models" button to `bar` and the dialog to the page. */
  mount(bar) {
    const open = make("button", { text: "Models", id: "manage-models", type: "button" });
    this.dialog = make("dialog", { id: "models-dialog", class: "models-dialog" });
    this.name = make("input", { id: "pull-name", required: "", "aria-label": "Model to pull" });
    this.name.placeholder = "llama3.2 or hf.co/USER/REPO";
    this.pullButton = make("button", { text: "Pull", id: "pull", type: "submit" });
    this.cancelButton = make("button", { text: "Cancel", id: "pull-cancel", type: "button" });
    this.cancelButton.hidden = true;
    const form = make("form", { id: "pull-form", class: "row" });
    form.append(this.name, this.pullButton, this.cancelButton);
    this.bar = make("progress", { id: "pull-progress", max: "1" });
    this.bar.hidden = true;
    this.status = make("p", { id: "pull-status", class: "muted" });
    this.error = make("p", { id: "pull-error", class: "error", role: "alert" });
    this.list = make("ul", { id: "model-list", class: "model-list" });
    const close = make("button", { text: "Close", id: "models-close", type: "button" });
    this.dialog.append(make("h2", { text: "Models" }), form, this.bar, this.status, this.error);
    this.dialog.append(this.list, close);
    bar.append(open);
    document.body.append(this.dialog);

    open.addEventListener("click", () => this.show());
    close.addEventListener("click", () => this.dialog.close());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.pull(this.name.value.trim());
    });
    this.cancelButton.addEventListener("click", () => this.controller?.abort());
  }

  show() {
    this.render();
    this.dialog.showModal();
    this.name.focus();
  }

  /** The store's models, each with Delete (which asks once more before it deletes). */
  render() {
    const rows = this.models.entries.map((model) => {
      const row = make("li", { "data-model": model.name });
      const remove = make("button", { text: "Delete", type: "button", class: "small" });
      remove.addEventListener("click", () => this.confirm(row, model.name));
      row.append(make("span", { text: model.name, class: "spacer" }));
      row.append(make("span", { text: size(model.size), class: "muted" }), remove);
      return row;
    });
    this.list.replaceChildren(...rows);
  }

  confirm(row, name) {
    const yes = make("button", { text: "Yes, delete", type: "button", class: "small danger" });
    const no = make("button", { text: "Keep", type: "button", class: "small" });
    yes.addEventListener("click", () => this.remove(name));
    no.addEventListener("click", () => this.render());
    row.replaceChildren(make("span", { text: `Delete ${name}?`, class: "spacer" }), yes, no);
    yes.focus();
  }

  async remove(name) {
    this.error.textContent = "";
    try {
      await request("DELETE", "/api/delete", { model: name });
      this.status.textContent = `Deleted ${name}.`;
    } catch (error) {
      this.error.textContent = describe(error);
    }
    await this.refresh(name);
  }

  async pull(name) {
    if (!name || this.controller) return;
    this.controller = new AbortController();
    this.busy(true);
    this.error.textContent = "";
    this.status.textContent = `Pulling ${name}…`;
    try {
      for await (const line of streamLines("/api/pull", { model: name }, this.controller.signal)) {
        this.progress(line);
      }
      this.status.textContent = `Pulled ${name}.`;
      this.name.value = "";
    } catch (error) {
      this.status.textContent = "";
      this.error.textContent =
        error.name === "AbortError"
          ? `Pull of ${name} cancelled.`
          : `Pull of ${name} failed: ${describe(error)}`;
    } finally {
      this.controller = null;
      this.busy(false);
      await this.refresh(null);
    }
  }

  progress(line) {
    this.status.textContent = progressText(line);
    if (line.total) {
      this.bar.hidden = false;
      this.bar.value = (line.completed || 0) / line.total;
    }
  }

  busy(flag) {
    this.pullButton.disabled = flag;
    this.cancelButton.hidden = !flag;
    if (!flag) this.bar.hidden = true;
  }

  /** Refresh the picker and the list; `gone` is a model just deleted. */
  async refresh(gone) {
    const chosen = this.models.value;
    if (gone) this.models.forget(gone);
    try {
      await this.models.refresh();
    } catch (error) {
      this.error.textContent = describe(error);
    }
    this.render();
    if (this.models.value !== chosen) this.changed(this.models.value);
  }
}
