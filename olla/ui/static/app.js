// The page's entry point: signs in if the server asks for a key, then wires the model picker,
// the conversation, the chats list, the settings panel, attachments, the keyboard and (for an
// admin) the Models dialog together.

import { ModelAdmin } from "./admin.js";
import { ApiError, describe } from "./api.js";
import { Conversation, emptyChat } from "./chat.js";
import { History } from "./history.js";
import { Models } from "./models.js";
import { currentSession, signIn, signOut } from "./session.js";
import { initTheme } from "./theme.js";

const $ = (id) => document.getElementById(id);

function notify(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    showSignIn();
    return;
  }
  notify(describe(error));
}

function showSignIn() {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-key").focus();
}

/** Read image files as the base64 strings /api/chat takes in `images`. */
function readImages(files) {
  const reads = [...files].map(
    (file) =>
      new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(file);
      }),
  );
  return Promise.all(reads);
}

class App {
  constructor(session) {
    this.session = session;
    this.images = [];
    this.models = new Models($("model"));
    this.conversation = new Conversation(
      { messages: $("messages") },
      {
        model: () => this.models.value,
        loaded: (name) => this.models.loaded(name),
        saved: (chat) => this.history.save(chat).catch(failed),
        failed,
        busy: (flag) => this.busy(flag),
      },
    );
    this.history = new History(
      { list: $("chats"), search: $("search"), note: $("history-note") },
      {
        open: (chat) => this.open(chat),
        current: () => this.conversation.chat.id,
        removed: (id) => id === this.conversation.chat.id && this.newChat(),
      },
    );
  }

  async start() {
    $("user").textContent = this.session.user;
    $("signout").hidden = !this.session.keys;
    this.wire();
    // only an admin's page (or anyone's, with no keys) has model management at all
    if (this.session.admin) new ModelAdmin(this.models, () => this.modelChanged()).mount($("bar"));
    try {
      await this.models.refresh();
    } catch (error) {
      failed(error);
    }
    this.newChat();
    await this.history.refresh();
    document.body.dataset.ready = "true"; // started: the picker and the chats list are filled
  }

  wire() {
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.conversation.stop();
    });
    $("stop").addEventListener("click", () => this.conversation.stop());
    $("new-chat").addEventListener("click", () => this.newChat());
    $("model").addEventListener("change", () => this.modelChanged());
    $("attach").addEventListener("change", () => this.attach());
    $("import").addEventListener("change", async () => {
      const [file] = $("import").files;
      $("import").value = "";
      if (file) await this.history.importFile(file).catch(failed);
    });
    $("toggle-sidebar").addEventListener("click", () => $("sidebar").classList.toggle("open"));
    $("signout").addEventListener("click", async () => {
      await signOut().catch(failed);
      window.location.reload();
    });
    $("system").addEventListener("change", () => {
      this.conversation.chat.system = $("system").value;
    });
    for (const [id, option] of [
      ["temperature", "temperature"],
      ["num-ctx", "num_ctx"],
    ]) {
      $(id).addEventListener("change", () => {
        const value = $(id).value === "" ? null : Number($(id).value);
        const options = { ...this.conversation.chat.options };
        if (value === null || Number.isNaN(value)) delete options[option];
        else options[option] = value;
        this.conversation.chat.options = options;
      });
    }
  }

  busy(flag) {
    $("send").disabled = flag;
    $("stop").hidden = !flag;
    if (flag) notify("");
    else this.models.refresh().catch(() => {}); // a model may have loaded: refresh the marks
  }

  async send() {
    const text = $("prompt").value.trim();
    if ((!text && !this.images.length) || this.conversation.busy) return;
    if (!this.models.value) {
      notify("No model to chat with: create or pull one first (olla pull llama3.2).");
      return;
    }
    const images = this.images;
    $("prompt").value = "";
    this.images = [];
    $("attachments").replaceChildren();
    await this.conversation.send(text, images);
  }

  async attach() {
    this.images = [...this.images, ...(await readImages($("attach").files))];
    $("attach").value = "";
    $("attachments").textContent = `${this.images.length} image(s) attached`;
  }

  async modelChanged() {
    const name = this.models.value;
    this.conversation.chat.model = name;
    const capabilities = await this.models.capabilities(name);
    // an earlier choice's answer may come last: only the current model's counts
    if (name === this.models.value) $("attach-label").hidden = !capabilities.includes("vision");
  }

  newChat() {
    this.open(emptyChat(this.models.value));
  }

  open(chat) {
    this.conversation.load(chat);
    this.models.value = chat.model;
    $("system").value = chat.system || "";
    $("temperature").value = chat.options.temperature ?? "";
    $("num-ctx").value = chat.options.num_ctx ?? "";
    $("sidebar").classList.remove("open");
    notify("");
    this.modelChanged();
  }
}

async function boot() {
  initTheme($("theme"));
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("signin-key").value);
      window.location.reload(); // start clean, with the cookie
    } catch (error) {
      $("signin-error").textContent =
        error instanceof ApiError && error.status === 401 ? "That key is not valid." : describe(error);
    }
  });
  const session = await currentSession();
  if (session === null) {
    showSignIn();
    return;
  }
  $("app").hidden = false;
  await new App(session).start();
}

boot().catch(failed);
