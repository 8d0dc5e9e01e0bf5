// The model picker: the store's models from /api/tags, the loaded ones (/api/ps) marked, and
// each model's capabilities from /api/show (vision: the page offers image attachments).

import { request } from "./api.js";

export class Models {
  constructor(select) {
    this.select = select;
    this.loadedNames = new Set();
    this.capabilityCache = new Map();
    this.entries = []; // /api/tags' models, as the last refresh found them
  }

  async refresh() {
    const [tags, ps] = await Promise.all([request("GET", "/api/tags"), request("GET", "/api/ps")]);
    this.loadedNames = new Set(ps.models.map((m) => m.name));
    this.entries = tags.models;
    const chosen = this.select.value;
    const options = tags.models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = this.loadedNames.has(m.name) ? `${m.name} ● loaded` : m.name;
      return option;
    });
    this.select.replaceChildren(...options);
    if (chosen) this.value = chosen;
  }

  get value() {
    return this.select.value;
  }

  /** Choose `name`, adding it when the store no longer lists it (an old chat's model). */
  set value(name) {
    if (!name) return;
    if (![...this.select.options].some((o) => o.value === name)) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `${name} (not in the store)`;
      this.select.append(option);
    }
    this.select.value = name;
  }

  /** Drop what is known of `name` (deleted: a later model of that name may differ). */
  forget(name) {
    this.capabilityCache.delete(name);
    if (this.select.value === name) this.select.value = ""; // the refresh then picks the first
  }

  loaded(name) {
    return this.loadedNames.has(name);
  }

  /** The model's capabilities ("completion", "vision", "thinking", ...); [] if unknown. */
  async capabilities(name) {
    if (!name) return [];
    if (!this.capabilityCache.has(name)) {
      try {
        const shown = await request("POST", "/api/show", { model: name });
        this.capabilityCache.set(name, shown.capabilities || []);
      } catch {
        return [];
      }
    }
    return this.capabilityCache.get(name);
  }
}
