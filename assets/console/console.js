// The Easel console: a hash-routed page over the REST API. No framework and no build step.
//
// The API key lives in this tab's sessionStorage and is sent as `Authorization: Bearer` by
// fetch(): no cookie is ever set, so another site cannot make the browser act with it (CSRF).
// Text from the server (prompts, names, URLs, error messages) is only ever put in the page as
// text nodes, never as HTML.
"use strict";

(() => {
  const API = "/api/rest/v1";
  const KEY = "easel.console.key";
  const USER = "easel.console.user";
  const POLL_MS = 1000;

  // ---------------------------------------------------------------------------------------------
  // DOM helpers
  // ---------------------------------------------------------------------------------------------

  /** An element: h("div", {class: "x", onclick: f}, "text", child, [more children]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const $ = (selector) => document.querySelector(selector);

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function when(text) {
    if (!text) return "—";
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return text;
    return date.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function ago(text) {
    if (!text) return "";
    const seconds = Math.round((Date.now() - new Date(text).getTime()) / 1000);
    if (!Number.isFinite(seconds)) return "";
    if (seconds < 5) return "just now";
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  function badge(text, kind) {
    return h("span", { class: `badge badge-${kind || String(text).toLowerCase()}` }, text);
  }

  function emptyState(title, ...lines) {
    return h("div", { class: "empty", dataset: { testid: "empty" } }, h("h3", {}, title), lines.map((l) => h("p", {}, l)));
  }

  let toastTimer = null;
  function toast(text) {
    const el = $("#toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function showError(error) {
    $("#banner-text").textContent = describe(error);
    $("#banner").hidden = false;
  }

  function hideError() {
    $("#banner").hidden = true;
  }

  /** An error in words: the server's message, or what went wrong on the way. */
  function describe(error) {
    if (error instanceof ApiError) return error.message;
    if (error instanceof TypeError) return `Cannot reach the Easel server (${error.message}). Check your connection and try again.`;
    return String(error && error.message ? error.message : error);
  }

  /** A button that shows it is busy while `action` runs, and reports its failure in words. */
  async function busy(button, action, errorTarget) {
    const label = button.textContent;
    button.disabled = true;
    button.classList.add("busy");
    try {
      return await action();
    } catch (error) {
      if (errorTarget) {
        errorTarget.textContent = describe(error);
        errorTarget.hidden = false;
      } else {
        showError(error);
      }
      return undefined;
    } finally {
      button.disabled = false;
      button.classList.remove("busy");
      button.textContent = label;
    }
  }

  function copyButton(value, label) {
    const button = h("button", { type: "button", class: "small", dataset: { testid: "copy" } }, label || "Copy");
    button.addEventListener("click", async () => {
      let copied = false;
      try {
        await navigator.clipboard.writeText(value);
        copied = true;
      } catch (_) {
        // No clipboard API (a page not served over HTTPS, say): select the text for the user.
        const field = button.parentElement.querySelector("input");
        if (field) {
          field.focus();
          field.select();
          try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
        }
      }
      button.textContent = copied ? "Copied ✓" : "Select and copy it";
      setTimeout(() => { button.textContent = label || "Copy"; }, 2000);
    });
    return button;
  }

  /** A secret shown once: read-only field, copy button. */
  function secretField(label, value, testid) {
    return h("div", { class: "secret" },
      h("label", {}, label),
      h("div", { class: "secret-row" },
        h("input", { type: "text", readonly: true, value, spellcheck: "false", dataset: { testid } }),
        copyButton(value)));
  }

  // ---------------------------------------------------------------------------------------------
  // The REST API
  // ---------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const session = {
    get key() { return sessionStorage.getItem(KEY); },
    get user() {
      try { return JSON.parse(sessionStorage.getItem(USER) || "null"); } catch (_) { return null; }
    },
    set(key, user) {
      sessionStorage.setItem(KEY, key);
      sessionStorage.setItem(USER, JSON.stringify(user));
    },
    clear() {
      sessionStorage.removeItem(KEY);
      sessionStorage.removeItem(USER);
    },
  };

  async function call(method, path, body, key) {
    const headers = { Authorization: `Bearer ${key || session.key}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (!response.ok) {
      const message = (json && json.error) || `The server answered ${response.status} ${response.statusText}.`;
      const error = new ApiError(response.status, message, json && json.code);
      if (response.status === 401 && !key) {
        signOut("Your API key was refused (it may have been deleted). Sign in again with a valid key.");
      }
      throw error;
    }
    return json;
  }

  const api = {
    get: (path, key) => call("GET", path, undefined, key),
    post: (path, body) => call("POST", path, body === undefined ? {} : body),
    del: (path) => call("DELETE", path),
  };

  // ---------------------------------------------------------------------------------------------
  // Signing in and out, pages
  // ---------------------------------------------------------------------------------------------

  const pages = {};
  let cleanup = [];

  function leavePage() {
    for (const stop of cleanup) stop();
    cleanup = [];
  }

  /** Calls `tick` every `ms` until the page is left; `tick` returning false stops it. */
  function every(ms, tick) {
    let stopped = false;
    let timer = null;
    const run = async () => {
      if (stopped) return;
      let again = true;
      try { again = (await tick()) !== false; } catch (error) { again = !(error instanceof ApiError && error.status === 401); }
      if (!stopped && again) timer = setTimeout(run, ms);
    };
    timer = setTimeout(run, ms);
    const stop = () => { stopped = true; clearTimeout(timer); };
    cleanup.push(stop);
    return stop;
  }

  async function signIn(key) {
    const me = await api.get("/me", key);
    const details = me && me.user_details && me.user_details[0];
    if (!details) throw new Error("The server's answer to /me has no user.");
    session.set(key, { id: details.user.id, username: details.user.username, slots: details.apiConcurrencySlots });
  }

  function signOut(message) {
    leavePage();
    session.clear();
    clear($("#main"));
    $("#shell").hidden = true;
    $("#signin").hidden = false;
    const error = $("#signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    const input = $("#signin-key");
    input.value = "";
    if (location.hash !== "" && location.hash !== "#/") history.replaceState(null, "", "#/");
    input.focus();
  }

  function route() {
    leavePage();
    hideError();
    $("#toast").hidden = true;
    if (!session.key || !session.user) {
      signOut(null);
      return;
    }
    $("#signin").hidden = true;
    $("#shell").hidden = false;
    $("#who-name").textContent = session.user.username;
    const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
    const name = pages[path] ? path : "generations";
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("active", link.dataset.page === name);
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const main = clear($("#main"));
    main.dataset.page = name;
    document.title = `${pages[name].title} · Easel console`;
    pages[name].render(main, new URLSearchParams(query || ""));
  }

  // ---------------------------------------------------------------------------------------------
  // Lightbox: thumbnails open full size
  // ---------------------------------------------------------------------------------------------

  function openImage(url, alt) {
    const box = $("#lightbox");
    const image = $("#lightbox-image");
    image.src = url;
    image.alt = alt || "";
    $("#lightbox-open").href = url;
    box.hidden = false;
    $("#lightbox-close").focus();
  }

  function closeImage() {
    $("#lightbox").hidden = true;
    $("#lightbox-image").removeAttribute("src");
  }

  // ---------------------------------------------------------------------------------------------
  // Generations
  // ---------------------------------------------------------------------------------------------

  const SIZES = [
    ["512x512", "512 × 512 (square)"],
    ["768x768", "768 × 768 (square)"],
    ["1024x1024", "1024 × 1024 (square)"],
    ["640x832", "640 × 832 (portrait)"],
    ["832x640", "832 × 640 (landscape)"],
    ["256x256", "256 × 256 (quick test)"],
  ];

  pages.generations = {
    title: "Generations",
    render(main) {
      const user = session.user;
      const models = new Map();
      const cards = new Map();
      let offset = 0;
      const pageSize = 12;

      const formError = h("p", { class: "error", role: "alert", hidden: true });
      const prompt = h("textarea", { id: "gen-prompt", name: "prompt", rows: 3, maxlength: 1500, required: true,
        placeholder: "An oil painting of a lighthouse at dawn, soft light" });
      const model = h("select", { id: "gen-model", name: "model" }, h("option", { value: "" }, "Default model"));
      const size = h("select", { id: "gen-size", name: "size" }, SIZES.map(([v, l]) => h("option", { value: v }, l)));
      const count = h("select", { id: "gen-count", name: "count" },
        [1, 2, 3, 4].map((n) => h("option", { value: n }, `${n} image${n > 1 ? "s" : ""}`)));
      const submit = h("button", { type: "submit", class: "primary", id: "gen-submit" }, "Generate");
      const form = h("form", { class: "card form-grid", id: "gen-form", novalidate: true },
        h("h2", { class: "card-title" }, "New generation"),
        h("div", { class: "field span-all" }, h("label", { for: "gen-prompt" }, "Prompt"), prompt),
        h("div", { class: "field" }, h("label", { for: "gen-model" }, "Model"), model),
        h("div", { class: "field" }, h("label", { for: "gen-size" }, "Size"), size),
        h("div", { class: "field" }, h("label", { for: "gen-count" }, "Number"), count),
        h("div", { class: "field actions" }, submit),
        formError);

      const gallery = h("div", { class: "gallery", id: "gallery" });
      const more = h("button", { type: "button", class: "ghost", hidden: true }, "Show older generations");
      main.append(
        h("div", { class: "page-head" }, h("h1", {}, "Generations"),
          h("p", { class: "muted" }, "Your images, newest first. Pending generations update by themselves.")),
        form, gallery, h("div", { class: "more" }, more));

      api.get("/platformModels").then((answer) => {
        for (const m of (answer && answer.custom_models) || []) {
          models.set(m.id, m.name);
          model.append(h("option", { value: m.id }, m.name));
        }
        for (const [id, card] of cards) card.refreshModel && card.refreshModel(id);
      }).catch(showError);

      form.addEventListener("submit", (event) => {
        event.preventDefault();
        formError.hidden = true;
        const text = prompt.value.trim();
        if (!text) {
          formError.textContent = "Write a prompt first: describe the image you want.";
          formError.hidden = false;
          prompt.focus();
          return;
        }
        const [width, height] = size.value.split("x").map(Number);
        const body = { prompt: text, width, height, num_images: Number(count.value) };
        if (model.value) body.modelId = model.value;
        busy(submit, async () => {
          submit.textContent = "Starting…";
          const answer = await api.post("/generations", body);
          const id = answer.sdGenerationJob.generationId;
          const generation = await api.get(`/generations/${id}`);
          const row = generation.generations_by_pk;
          if (row) {
            row.expected = body.num_images;
            show(row, true);
          }
          toast("Generation started: its images appear here when they are ready.");
        }, formError);
      });

      function placeholderCount(g) {
        return g.expected || 1;
      }

      function renderCard(g) {
        const status = g.status;
        const images = g.generated_images || [];
        const thumbs = h("div", { class: "thumbs" });
        if (status === "COMPLETE") {
          images.forEach((image, index) => {
            const alt = `${g.prompt} (${index + 1} of ${images.length})`;
            thumbs.append(h("a", {
              href: image.url, class: "thumb", target: "_blank", rel: "noopener noreferrer", title: "Open full size",
              dataset: { testid: "thumb" },
              onclick: (event) => { event.preventDefault(); openImage(image.url, alt); },
            }, h("img", { src: image.url, alt, loading: "lazy", width: g.imageWidth, height: g.imageHeight })));
          });
          if (images.length === 0) thumbs.append(h("p", { class: "muted" }, "No images (they were deleted)."));
        } else if (status === "PENDING") {
          for (let i = 0; i < placeholderCount(g); i++) {
            thumbs.append(h("div", { class: "thumb placeholder", "aria-label": "Rendering" }, h("span", { class: "spinner" })));
          }
        } else {
          thumbs.append(h("div", { class: "failure" }, h("strong", {}, "This generation failed. "),
            g.failureReason || "The server gave no reason."));
        }
        const modelName = models.get(g.modelId) || "Model " + String(g.modelId).slice(0, 8);
        const remove = h("button", { type: "button", class: "ghost small danger", dataset: { testid: "delete-generation" } }, "Delete");
        remove.addEventListener("click", () => {
          if (!confirm("Delete this generation and its images? This cannot be undone.")) return;
          busy(remove, async () => {
            await api.del(`/generations/${g.id}`);
            const card = cards.get(g.id);
            if (card) card.remove();
            cards.delete(g.id);
            toast("Generation deleted.");
            if (cards.size === 0) showEmpty();
          });
        });
        const card = h("article", { class: `card gen gen-${status.toLowerCase()}`, dataset: { id: g.id, status, testid: "generation" } },
          h("div", { class: "gen-head" }, badge(status === "PENDING" ? "Rendering" : status === "COMPLETE" ? "Complete" : "Failed", status.toLowerCase()),
            h("time", { datetime: g.createdAt, title: when(g.createdAt) }, ago(g.createdAt))),
          thumbs,
          h("p", { class: "prompt" }, g.prompt),
          h("p", { class: "meta" }, `${modelName} · ${g.imageWidth} × ${g.imageHeight} · seed ${g.seed}`),
          h("div", { class: "row-actions" },
            h("a", { href: `#/deliveries?generation=${g.id}`, class: "small-link" }, "Callbacks"),
            remove));
        return card;
      }

      function show(g, first) {
        const old = cards.get(g.id);
        if (old && old.dataset.status === "PENDING" && g.status === "PENDING") return;
        if (old && g.expected === undefined) g.expected = Number(old.dataset.expected || 1);
        const card = renderCard(g);
        card.dataset.expected = g.expected || 1;
        const empty = gallery.querySelector(".empty");
        if (empty) empty.remove();
        if (old) old.replaceWith(card);
        else if (first) gallery.prepend(card);
        else gallery.append(card);
        cards.set(g.id, card);
      }

      function showEmpty() {
        clear(gallery).append(emptyState("No generations yet",
          "Describe an image in the form above and press Generate. It appears here, and its images fill in when they are ready."));
      }

      async function load() {
        const answer = await api.get(`/generations/user/${user.id}?limit=${pageSize}&offset=${offset}`);
        const list = (answer && answer.generations) || [];
        for (const g of list) show(g, false);
        offset += list.length;
        more.hidden = list.length < pageSize;
        if (cards.size === 0) showEmpty();
      }

      more.addEventListener("click", () => busy(more, load));
      gallery.append(h("p", { class: "muted loading" }, "Loading your generations…"));
      load().then(() => { const l = gallery.querySelector(".loading"); if (l) l.remove(); }).catch((error) => {
        clear(gallery);
        showError(error);
      });

      // Live status: while something is pending, look at it again.
      every(POLL_MS, async () => {
        const pending = [...cards.values()].filter((c) => c.dataset.status === "PENDING").map((c) => c.dataset.id);
        for (const id of pending) {
          const answer = await api.get(`/generations/${id}`);
          const g = answer && answer.generations_by_pk;
          if (!g) {
            const card = cards.get(id);
            if (card) card.remove();
            cards.delete(id);
          } else if (g.status !== "PENDING") {
            show(g, false);
          }
        }
      });
    },
  };

  // ---------------------------------------------------------------------------------------------
  // API keys
  // ---------------------------------------------------------------------------------------------

  pages.keys = {
    title: "API keys",
    render(main) {
      const list = h("div", { class: "key-list", id: "key-list" });
      const reveal = h("div", { id: "key-reveal" });
      const createError = h("p", { class: "error", role: "alert", hidden: true });
      const name = h("input", { id: "key-name", type: "text", maxlength: 100, required: true, placeholder: "production server" });
      const url = h("input", { id: "key-webhook-url", type: "url", placeholder: "https://hooks.example.com/leonardo", spellcheck: "false" });
      const hookKey = h("input", { id: "key-webhook-key", type: "password", autocomplete: "new-password", placeholder: "optional", spellcheck: "false" });
      const manage = h("input", { id: "key-manage", type: "checkbox" });
      const submit = h("button", { type: "submit", class: "primary", id: "key-create" }, "Create key");
      const form = h("form", { class: "card form-grid", id: "key-form", novalidate: true },
        h("h2", { class: "card-title" }, "Create a key"),
        h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), name),
        h("div", { class: "field" }, h("label", { for: "key-webhook-url" }, "Webhook callback URL ", h("span", { class: "muted" }, "(optional, https://)")), url),
        h("div", { class: "field" }, h("label", { for: "key-webhook-key" }, "Webhook callback API key ", h("span", { class: "muted" }, "(sent as Bearer)")), hookKey),
        h("div", { class: "field checkbox" }, manage, h("label", { for: "key-manage" }, "This key may manage keys (sign in to this console with it)")),
        h("div", { class: "field actions" }, submit),
        createError);

      main.append(
        h("div", { class: "page-head" }, h("h1", {}, "API keys"),
          h("p", { class: "muted" }, "Keys are shown masked. A new key and its signing secret are shown once, when they are made. Webhook details cannot be changed: rotate the key instead.")),
        reveal, form, h("h2", { class: "section-title" }, "Your keys"), list);

      form.addEventListener("submit", (event) => {
        event.preventDefault();
        createError.hidden = true;
        if (!name.value.trim()) {
          createError.textContent = "Give the key a name, so you can tell it apart later.";
          createError.hidden = false;
          name.focus();
          return;
        }
        const body = { name: name.value.trim(), manageKeys: manage.checked };
        if (url.value.trim()) body.webhookCallbackUrl = url.value.trim();
        if (hookKey.value) body.webhookCallbackApiKey = hookKey.value;
        busy(submit, async () => {
          const created = await api.post("/keys", body);
          form.reset();
          showCreated(created);
          await load();
        }, createError);
      });

      function showCreated(created) {
        clear(reveal).append(h("section", { class: "card reveal", dataset: { testid: "new-key" } },
          h("h2", { class: "card-title" }, `Key “${created.name}” created`),
          h("p", { class: "warning" }, "Copy the key and the signing secret now: they are shown only this once."),
          secretField("API key", created.key, "new-key-value"),
          secretField("Signing secret (verifies the webhook-signature of callbacks)", created.signingSecret, "new-key-secret"),
          created.webhookCallbackUrl ? h("p", { class: "meta" }, `Callbacks go to ${created.webhookCallbackUrl}`) : null,
          h("button", { type: "button", class: "ghost small", onclick: () => clear(reveal) }, "I have copied them")));
        reveal.scrollIntoView({ block: "start" });
      }

      function keyRow(key, current) {
        const isCurrent = key.id === current;
        const hook = key.webhook;
        const rotate = h("button", { type: "button", class: "small", dataset: { testid: "rotate" } }, "Rotate");
        rotate.addEventListener("click", () => startRotation(key, isCurrent));
        const remove = h("button", {
          type: "button", class: "small danger", dataset: { testid: "delete-key" }, disabled: isCurrent,
          title: isCurrent ? "You are signed in with this key: rotate it, and the console deletes it once you switch" : "Delete this key",
        }, "Delete");
        remove.addEventListener("click", () => {
          if (!confirm(`Delete the key “${key.name}” (${key.maskedKey})? It stops working at once. Callbacks it already owes are still delivered.`)) return;
          busy(remove, async () => {
            await api.del(`/keys/${key.id}`);
            toast(`Key “${key.name}” deleted.`);
            await load();
          });
        });
        return h("article", { class: "card key", dataset: { id: key.id, testid: "key" } },
          h("div", { class: "key-main" },
            h("div", {},
              h("h3", { class: "key-name" }, key.name, isCurrent ? badge("signed in with this key", "current") : null,
                key.manageKeys ? badge("manages keys", "manage") : null),
              h("p", { class: "mono" }, key.maskedKey),
              h("p", { class: "meta" }, `Created ${when(key.createdAt)} · ${key.lastUsed ? "last used " + ago(key.lastUsed) : "never used"}`)),
            h("div", { class: "row-actions" }, rotate, remove)),
          hook
            ? h("p", { class: "hook" }, badge(`webhook ${hook.state}`, hook.state), " ", h("span", { class: "mono break" }, hook.url),
              key.webhookCallbackApiKey ? h("span", { class: "muted" }, " · with a webhook key") : null,
              hook.state === "disabled" ? h("span", { class: "muted" }, ` · disabled ${when(hook.disabledAt)}: its deliveries are held`) : null,
              hook.state === "failing" ? h("span", { class: "muted" }, ` · failing since ${when(hook.failingSince)}`) : null)
            : h("p", { class: "hook muted" }, "No webhook: generations made with this key are not called back."));
      }

      function startRotation(key, isCurrent) {
        const newSecret = h("input", { type: "checkbox", id: "rotate-new-secret" });
        const error = h("p", { class: "error", role: "alert", hidden: true });
        const go = h("button", { type: "button", class: "primary", id: "rotate-confirm" }, "Create the replacement");
        const panel = h("section", { class: "card rotation", id: "rotation", dataset: { testid: "rotation" } },
          h("h2", { class: "card-title" }, `Rotate “${key.name}”`),
          h("ol", { class: "steps" },
            h("li", {}, "Easel creates a new key with the same webhook URL and webhook key (copied on the server, so you need not know them)."),
            h("li", {}, "You switch your applications to the new key. Both keys work meanwhile."),
            h("li", {}, "You delete the old key here.")),
          h("div", { class: "field checkbox" }, newSecret, h("label", { for: "rotate-new-secret" },
            "Also issue a new signing secret (your receiver must then accept both secrets until the old key's callbacks are done)")),
          error,
          h("div", { class: "row-actions" }, go, h("button", { type: "button", class: "ghost", onclick: () => clear(reveal) }, "Cancel")));
        clear(reveal).append(panel);
        panel.scrollIntoView({ block: "start" });
        go.addEventListener("click", () => busy(go, async () => {
          const rotated = await api.post(`/keys/${key.id}/rotate`, { newSigningSecret: newSecret.checked });
          showRotated(key, rotated, isCurrent);
          await load();
        }, error));
      }

      function showRotated(old, rotated, isCurrent) {
        const error = h("p", { class: "error", role: "alert", hidden: true });
        const finish = h("button", { type: "button", class: "primary danger-solid", id: "rotate-delete-old" }, "Delete the old key");
        const panel = h("section", { class: "card rotation", id: "rotation", dataset: { testid: "rotation" } },
          h("h2", { class: "card-title" }, "Replacement created"),
          h("div", { class: "pair" },
            h("div", { class: "pair-item" }, h("h3", {}, "Old key"), h("p", {}, old.name), h("p", { class: "mono", dataset: { testid: "old-key" } }, old.maskedKey),
              h("p", { class: "muted" }, "Still works until you delete it.")),
            h("div", { class: "pair-item new" }, h("h3", {}, "New key"), h("p", {}, rotated.name),
              secretField("API key (shown only this once)", rotated.key, "rotated-key-value"),
              rotated.signingSecret
                ? secretField("New signing secret (shown only this once)", rotated.signingSecret, "rotated-key-secret")
                : h("p", { class: "muted" }, "Signs callbacks with the old key's signing secret: your receiver needs no change."),
              rotated.webhookCallbackUrl ? h("p", { class: "meta" }, `Callbacks go to ${rotated.webhookCallbackUrl}`) : null)),
          h("p", { class: "warning" }, isCurrent
            ? "You are signed in with the old key. Deleting it signs this console in with the new key."
            : "Switch your applications to the new key first: requests with the old key fail once it is deleted."),
          error,
          h("div", { class: "row-actions" }, finish, h("button", { type: "button", class: "ghost", onclick: () => clear(reveal) }, "Keep both for now")));
        clear(reveal).append(panel);
        finish.addEventListener("click", () => {
          if (!confirm(`Delete the old key “${old.name}” (${old.maskedKey}) now?`)) return;
          busy(finish, async () => {
            if (isCurrent) {
              // Switch this tab to the new key first: a key cannot delete itself.
              await signIn(rotated.key);
            }
            await api.del(`/keys/${old.id}`);
            clear(reveal).append(h("section", { class: "card reveal done", dataset: { testid: "rotation-done" } },
              h("h2", { class: "card-title" }, "Rotation complete"),
              h("p", {}, `The old key ${old.maskedKey} is deleted; “${rotated.name}” (${rotated.maskedKey}) replaces it.`),
              isCurrent ? h("p", { class: "muted" }, "This console is now signed in with the new key.") : null,
              h("button", { type: "button", class: "ghost small", onclick: () => clear(reveal) }, "Done")));
            toast("Old key deleted.");
            await load();
          }, error);
        });
      }

      async function load() {
        let answer;
        try {
          answer = await api.get("/keys");
        } catch (error) {
          if (error instanceof ApiError && error.status === 403) {
            form.remove();
            clear(list).append(h("div", { class: "empty", dataset: { testid: "keys-forbidden" } },
              h("h3", {}, "This key cannot manage API keys"),
              h("p", {}, "Only keys with the manageKeys permission list, create, rotate and delete keys: the operator's first key, keys made with ",
                h("code", { class: "nowrap" }, "easel keys create --manage-keys"), ", and keys such a key creates with “may manage keys” ticked."),
              h("p", {}, "Sign in with such a key to manage keys. Generations, deliveries and webhook tools work with any key.")));
            return;
          }
          throw error;
        }
        const keys = answer.apiKeys || [];
        clear(list);
        if (keys.length === 0) list.append(emptyState("No keys", "Create one with the form above."));
        for (const key of keys) list.append(keyRow(key, answer.currentKeyId));
      }

      list.append(h("p", { class: "muted" }, "Loading your keys…"));
      load().catch(showError);
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Deliveries
  // ---------------------------------------------------------------------------------------------

  function attemptLine(a) {
    const ok = a.statusCode !== null && a.statusCode >= 200 && a.statusCode < 300 && !a.errorClass;
    const outcome = a.errorClass
      ? badge(a.statusCode ? `${a.errorClass} ${a.statusCode}` : a.errorClass, "failed")
      : badge(`HTTP ${a.statusCode}`, ok ? "succeeded" : "failed");
    return h("li", { class: `attempt ${ok ? "ok" : "bad"}`, dataset: { testid: "attempt" } },
      h("div", { class: "attempt-head" }, h("strong", {}, `Attempt ${a.attempt}`), outcome,
        h("time", { datetime: a.startedAt }, when(a.startedAt)), h("span", { class: "muted" }, `${a.durationMs} ms`)),
      a.errorDetail ? h("p", { class: "attempt-detail" }, a.errorDetail) : null,
      a.responseExcerpt ? h("pre", { class: "excerpt" }, a.responseExcerpt) : null);
  }

  function deliveryCard(d, onRetry) {
    const status = d.held ? "held" : d.status;
    const attempts = d.attempts || [];
    const timeline = h("ol", { class: "timeline" }, attempts.map(attemptLine));
    if (attempts.length === 0) timeline.append(h("li", { class: "muted" }, d.held
      ? "No attempt yet: the key's webhook is disabled for failing, so this delivery is held. Re-enable it under Webhook tools."
      : "No attempt yet: it is queued."));
    const retry = h("button", { type: "button", class: "small", dataset: { testid: "redeliver" } }, "Redeliver");
    retry.addEventListener("click", () => busy(retry, () => onRetry(d)));
    const details = h("details", { class: "attempts", open: attempts.length > 0 && attempts.length <= 3 },
      h("summary", {}, `${d.attemptCount} attempt${d.attemptCount === 1 ? "" : "s"}`), timeline);
    return h("article", { class: `card delivery status-${status}`, dataset: { id: d.id, status: d.status, testid: "delivery" } },
      h("div", { class: "delivery-head" },
        h("div", {}, badge(status, status), " ", h("strong", {}, d.eventType),
          h("p", { class: "mono break" }, d.url),
          h("p", { class: "meta" }, `Created ${when(d.createdAt)}`,
            d.nextAttemptAt && d.status === "pending" ? ` · next attempt ${when(d.nextAttemptAt)}` : "",
            d.finishedAt ? ` · finished ${when(d.finishedAt)}` : "",
            " · generation ", h("a", { href: `#/deliveries?generation=${d.generationId}`, class: "mono" }, d.generationId.slice(0, 8)),
            " · webhook-id ", h("span", { class: "mono" }, d.webhookId.slice(0, 8)))),
        h("div", { class: "row-actions" }, retry)),
      details);
  }

  pages.deliveries = {
    title: "Deliveries",
    render(main, query) {
      const status = h("select", { id: "filter-status" },
        [["", "Any status"], ["pending", "Pending"], ["succeeded", "Succeeded"], ["failed", "Failed"]].map(([v, l]) => h("option", { value: v }, l)));
      const keyFilter = h("select", { id: "filter-key" }, h("option", { value: "" }, "Any key"));
      const generation = h("input", { id: "filter-generation", type: "text", placeholder: "generation id", spellcheck: "false", value: query.get("generation") || "" });
      status.value = query.get("status") || "";
      const apply = h("button", { type: "submit", class: "primary" }, "Apply");
      const reset = h("button", { type: "button", class: "ghost" }, "Clear");
      const filters = h("form", { class: "card filters", id: "delivery-filters", novalidate: true },
        h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), status),
        h("div", { class: "field" }, h("label", { for: "filter-key" }, "API key"), keyFilter),
        h("div", { class: "field" }, h("label", { for: "filter-generation" }, "Generation"), generation),
        h("div", { class: "field actions" }, apply, reset));
      const list = h("div", { class: "delivery-list", id: "delivery-list" });
      const refresh = h("button", { type: "button", class: "small", id: "deliveries-refresh" }, "Refresh");
      refresh.addEventListener("click", () => busy(refresh, load));
      main.append(
        h("div", { class: "page-head split" },
          h("div", {}, h("h1", {}, "Deliveries"),
            h("p", { class: "muted" }, "Webhook callbacks of your generations and test callbacks, newest first, with every attempt.")),
          refresh),
        filters, list);

      const keyNames = new Map();
      api.get("/keys").then((answer) => {
        for (const key of answer.apiKeys || []) keyNames.set(key.id, `${key.name} (${key.maskedKey})`);
        fillKeys([]);
      }).catch(() => { /* A key without the permission filters by the ids it sees. */ });

      function fillKeys(deliveries) {
        for (const d of deliveries) if (!keyNames.has(d.apiKeyId)) keyNames.set(d.apiKeyId, `key ${d.apiKeyId.slice(0, 8)}`);
        const chosen = keyFilter.value || query.get("key") || "";
        clear(keyFilter).append(h("option", { value: "" }, "Any key"));
        for (const [id, label] of keyNames) keyFilter.append(h("option", { value: id }, label));
        keyFilter.value = keyNames.has(chosen) ? chosen : "";
      }

      filters.addEventListener("submit", (event) => {
        event.preventDefault();
        const params = new URLSearchParams();
        if (status.value) params.set("status", status.value);
        if (keyFilter.value) params.set("key", keyFilter.value);
        if (generation.value.trim()) params.set("generation", generation.value.trim());
        const hash = `#/deliveries${params.toString() ? "?" + params : ""}`;
        if (location.hash === hash) route(); else location.hash = hash;
      });
      reset.addEventListener("click", () => { location.hash = "#/deliveries"; });

      async function retry(d) {
        const answer = await api.post(`/deliveries/${d.id}/retry`);
        if (!answer.delivery) throw new Error("That delivery no longer exists.");
        toast("Redelivery queued: it is sent again with the same webhook-id.");
        await load();
      }

      async function load() {
        const gen = (query.get("generation") || "").trim();
        let deliveries;
        if (gen) {
          if (!/^[0-9a-fA-F-]{36}$/.test(gen)) {
            clear(list).append(emptyState("Not a generation id", "A generation id looks like 0c6e2a4b-1f9d-4c51-8e3a-2d7b9f6c1a05."));
            return false;
          }
          deliveries = (await api.get(`/generations/${gen}/deliveries`)).deliveries || [];
          if (query.get("status")) deliveries = deliveries.filter((d) => d.status === query.get("status"));
        } else {
          const params = new URLSearchParams({ limit: "100" });
          if (query.get("status")) params.set("status", query.get("status"));
          deliveries = (await api.get(`/deliveries?${params}`)).deliveries || [];
        }
        fillKeys(deliveries);
        if (query.get("key")) deliveries = deliveries.filter((d) => d.apiKeyId === query.get("key"));
        const open = new Set([...list.querySelectorAll("details[open]")].map((el) => el.closest("[data-id]").dataset.id));
        clear(list);
        if (deliveries.length === 0) {
          list.append(query.toString()
            ? emptyState("No deliveries match these filters", "Clear the filters to see all of your deliveries.")
            : emptyState("No deliveries yet",
              "A delivery is made when a generation by a key with a webhook finishes, or when you send a test callback (Webhook tools).",
              "Give a key a webhook URL on the API keys page, then generate with that key."));
        }
        for (const d of deliveries) {
          const card = deliveryCard(d, retry);
          if (open.has(d.id)) card.querySelector("details").open = true;
          list.append(card);
        }
        return deliveries.some((d) => d.status === "pending");
      }

      list.append(h("p", { class: "muted" }, "Loading deliveries…"));
      load().catch(showError);
      // While some are pending, follow them.
      every(2 * POLL_MS, async () => {
        if (list.querySelector('[data-status="pending"]')) await load();
      });
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Webhook tools: the signed-in key's webhook, test callbacks, the doctor
  // ---------------------------------------------------------------------------------------------

  pages.webhook = {
    title: "Webhook tools",
    render(main) {
      const state = h("div", { id: "webhook-state" });
      const result = h("div", { id: "webhook-result" });
      main.append(
        h("div", { class: "page-head" }, h("h1", {}, "Webhook tools"),
          h("p", { class: "muted" }, "For the key you are signed in with: send a test callback, or let the doctor examine the webhook step by step.")),
        state, result);

      function doctorReport(report) {
        return h("section", { class: "card", dataset: { testid: "doctor-report" } },
          h("h2", { class: "card-title" }, "Doctor: ", badge(report.verdict, report.verdict)),
          h("p", { class: "meta" }, `${report.url} · ${when(report.startedAt)} · ${report.durationMs} ms`),
          h("ol", { class: "timeline" }, report.steps.map((step) => h("li", { class: `attempt ${{ ok: "ok", fail: "bad", warn: "warn" }[step.verdict] || ""}` },
            h("div", { class: "attempt-head" }, h("strong", {}, step.step), badge(step.verdict, step.verdict)),
            h("p", { class: "attempt-detail" }, step.detail),
            step.advice ? h("p", { class: "advice" }, "What to do: ", step.advice) : null))));
      }

      function testResult(answer) {
        const a = answer.attempt;
        return h("section", { class: "card", dataset: { testid: "test-result" } },
          h("h2", { class: "card-title" }, "Test callback: ", answer.delivered ? badge("delivered", "succeeded") : badge(a ? "not delivered" : "still pending", a ? "failed" : "pending")),
          a ? h("ol", { class: "timeline" }, attemptLine(a)) : h("p", {}, "No attempt was recorded in time; see Deliveries for what happens next."),
          h("p", { class: "meta" }, "It is kept among your deliveries, and never retried. ",
            h("a", { href: "#/deliveries" }, "See the deliveries")));
      }

      async function load() {
        const hook = await api.get("/webhook");
        clear(state);
        if (hook.state === "none") {
          state.append(emptyState("This key has no webhook",
            "Test callbacks and the doctor use the webhook of the key you are signed in with.",
            "Create a key with a webhook URL on the API keys page (tick “may manage keys” to sign in with it), then sign in with that key."));
          return;
        }
        const test = h("button", { type: "button", class: "primary", id: "webhook-test" }, "Send a test callback");
        const doctor = h("button", { type: "button", id: "webhook-doctor" }, "Run the doctor");
        const enable = hook.state === "disabled" ? h("button", { type: "button", id: "webhook-enable" }, "Re-enable the webhook") : null;
        state.append(h("section", { class: "card" },
          h("h2", { class: "card-title" }, "Webhook ", badge(hook.state, hook.state)),
          h("p", { class: "mono break" }, hook.url),
          hook.state === "disabled" ? h("p", { class: "warning" }, `Disabled ${when(hook.disabledAt)} for failing: its deliveries are held until you re-enable it.`) : null,
          hook.state === "failing" ? h("p", { class: "warning" }, `Every attempt has failed since ${when(hook.failingSince)}.`) : null,
          h("div", { class: "row-actions" }, test, doctor, enable)));
        test.addEventListener("click", () => busy(test, async () => {
          test.textContent = "Sending…";
          clear(result).append(testResult(await api.post("/webhook/test")));
        }));
        doctor.addEventListener("click", () => busy(doctor, async () => {
          doctor.textContent = "Examining…";
          clear(result).append(doctorReport(await api.post("/webhook/doctor")));
        }));
        if (enable) enable.addEventListener("click", () => busy(enable, async () => {
          await api.post("/webhook/enable");
          toast("Webhook re-enabled: held deliveries are being sent, oldest first.");
          await load();
        }));
      }

      load().catch(showError);
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("#signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("#signin-key");
      const error = $("#signin-error");
      error.hidden = true;
      const key = input.value.trim();
      if (!key) {
        error.textContent = "Paste your API key to sign in.";
        error.hidden = false;
        return;
      }
      await busy($("#signin-submit"), async () => {
        try {
          await signIn(key);
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) throw new Error("This API key was not accepted: it is unknown or was deleted.");
          throw e;
        }
        input.value = "";
        if (!location.hash || location.hash === "#/") location.hash = "#/generations";
        else route();
      }, error);
    });
    $("#signout").addEventListener("click", () => signOut(null));
    $("#banner-close").addEventListener("click", hideError);
    $("#lightbox-close").addEventListener("click", closeImage);
    $("#lightbox").addEventListener("click", (event) => { if (event.target.id === "lightbox") closeImage(); });
    document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !$("#lightbox").hidden) closeImage(); });
    window.addEventListener("hashchange", route);
    route();
  });
})();
