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
    put: (path, body) => call("PUT", path, body),
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
  // Inspector: bins that record requests (callbacks included) and answer as configured
  // ---------------------------------------------------------------------------------------------

  /** "Name: value" lines from [name, value] pairs, and back (refusing a line without a colon). */
  function headerLines(pairs) {
    return (pairs || []).map(([name, value]) => `${name}: ${value}`).join("\n");
  }

  function parseHeaderLines(text) {
    const pairs = [];
    text.split("\n").forEach((line, index) => {
      if (!line.trim()) return;
      const colon = line.indexOf(":");
      if (colon <= 0) throw new Error(`Response headers, line ${index + 1}: write one header per line as “Name: value”.`);
      pairs.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    });
    return pairs;
  }

  /** The form for what a bin answers (creation, and changing it); `onSubmit(response)`. */
  function answerForm(id, title, submitLabel, response, onSubmit, onCancel) {
    const status = h("input", { id: `${id}-status`, type: "number", min: 100, max: 999, step: 1, value: response.status, required: true });
    const delay = h("input", { id: `${id}-delay`, type: "number", min: 0, step: 100, value: response.delayMs });
    const headers = h("textarea", { id: `${id}-headers`, rows: 2, spellcheck: "false", placeholder: "Retry-After: 30" });
    headers.value = headerLines(response.headers);
    const body = h("textarea", { id: `${id}-body`, rows: 2, spellcheck: "false", placeholder: "ok" });
    body.value = response.body || "";
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary", id: `${id}-submit` }, submitLabel);
    const form = h("form", { class: "card form-grid answer-form", id, novalidate: true },
      h("h2", { class: "card-title" }, title),
      h("div", { class: "field" }, h("label", { for: `${id}-status` }, "Answer with HTTP status"), status),
      h("div", { class: "field" }, h("label", { for: `${id}-delay` }, "after a delay of (ms)"), delay),
      h("div", { class: "field span-2" }, h("label", { for: `${id}-headers` }, "Response headers ", h("span", { class: "muted" }, "(one “Name: value” a line)")), headers),
      h("div", { class: "field span-all" }, h("label", { for: `${id}-body` }, "Response body ", h("span", { class: "muted" }, "(text)")), body),
      error,
      h("div", { class: "field actions span-all" },
        onCancel ? h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel") : null, submit));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      error.hidden = true;
      busy(submit, async () => {
        const code = Number(status.value);
        if (!Number.isInteger(code) || code < 100 || code > 999) throw new Error("The status must be a whole number from 100 to 999, such as 200, 410, 429 or 500.");
        const wait = delay.value.trim() === "" ? 0 : Number(delay.value);
        if (!Number.isInteger(wait) || wait < 0) throw new Error("The delay is a whole number of milliseconds, 0 or more.");
        await onSubmit({ status: code, delayMs: wait, headers: parseHeaderLines(headers.value), body: body.value });
      }, error);
    });
    return form;
  }

  function answerSummary(response) {
    const parts = [`answers ${response.status}`];
    if (response.headers.length) parts.push(`${response.headers.length} header${response.headers.length === 1 ? "" : "s"}`);
    parts.push(response.body ? `a ${new TextEncoder().encode(response.body).length}-byte body` : "an empty body");
    if (response.delayMs) parts.push(`after ${response.delayMs} ms`);
    return parts.join(" · ");
  }

  function urlField(url) {
    return h("div", { class: "secret-row" },
      h("input", { type: "text", readonly: true, value: url, spellcheck: "false", "aria-label": "The bin's URL", dataset: { testid: "bin-url" } }),
      copyButton(url, "Copy URL"));
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  /** The body as text, or null when it is not UTF-8 (binary). */
  function bodyText(request) {
    if (!request.bodyBase64) return "";
    const raw = atob(request.bodyBase64);
    const data = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
    try {
      // A body cut at the cap may end inside a character: decode what is whole.
      return new TextDecoder("utf-8", { fatal: true }).decode(data, { stream: request.bodyTruncated });
    } catch (_) {
      return null;
    }
  }

  function headerValue(request, name) {
    const pair = (request.headers || []).find(([n]) => n.toLowerCase() === name);
    return pair ? pair[1] : null;
  }

  function check(ok, yes, no, none, reason, testid) {
    const state = ok === true ? "ok" : ok === false ? "fail" : "none";
    return h("li", { class: `check check-${state}`, dataset: { testid, ok: String(ok) } },
      h("span", { class: "check-mark", "aria-hidden": "true" }, ok === true ? "✓" : ok === false ? "✗" : "–"),
      h("strong", {}, ok === true ? yes : ok === false ? no : none), " ",
      h("span", { class: "muted" }, reason));
  }

  function checksView(request) {
    const checks = request.callbackChecks;
    if (!checks || checks.length === 0) {
      return h("p", { class: "muted", dataset: { testid: "no-checks" } },
        "Not a callback of one of your keys calling back this bin, so there is nothing to check it against. ",
        "Create a key calling back this bin to see what a receiver must verify.");
    }
    return checks.map((c) => h("div", { class: "checks", dataset: { testid: "checks", key: c.apiKeyId } },
      h("p", { class: "meta" }, "As a callback of your key “", c.apiKeyName, "”, a correct receiver finds:"),
      h("ul", { class: "check-list" },
        check(c.bearerMatched, "Bearer matched", "Bearer not matched", "No bearer to match", c.bearer, "check-bearer"),
        check(c.signatureVerified, "Signature verified", "Signature not verified", "", c.signature, "check-signature"))));
  }

  function checkBadges(request) {
    const checks = request.callbackChecks || [];
    if (checks.length === 0) return [];
    const bearer = checks.some((c) => c.bearerMatched === true) ? true : checks.every((c) => c.bearerMatched === null) ? null : false;
    const signature = checks.some((c) => c.signatureVerified);
    return [
      bearer === null ? null : badge(bearer ? "bearer ✓" : "bearer ✗", bearer ? "ok" : "fail"),
      badge(signature ? "signature ✓" : "signature ✗", signature ? "ok" : "fail"),
    ];
  }

  function requestCard(request) {
    const text = bodyText(request);
    let shown = text;
    const type = (headerValue(request, "content-type") || "").toLowerCase();
    if (text && type.includes("json")) {
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { shown = text; }
    }
    const callback = (request.callbackChecks || []).length > 0;
    const event = callback && text ? (() => { try { return JSON.parse(text).type; } catch (_) { return null; } })() : null;
    return h("details", { class: "card request", dataset: { testid: "request", seq: request.seq } },
      h("summary", {},
        h("span", { class: "request-line" },
          badge(request.method, "method"), " ",
          h("span", { class: "mono break" }, request.path)),
        h("span", { class: "request-facts" },
          callback ? badge(event || "callback", "manage") : null, checkBadges(request),
          h("span", { class: "meta" }, `${bytes(request.bodySize)} · ${request.source} · `,
            h("time", { datetime: request.receivedAt, title: when(request.receivedAt) }, when(request.receivedAt))))),
      h("div", { class: "request-body" },
        h("h3", {}, "Callback checks"), checksView(request),
        h("h3", {}, "Headers"),
        h("table", { class: "headers" }, h("tbody", {}, (request.headers || []).map(([name, value]) =>
          h("tr", {}, h("th", { class: "mono" }, name), h("td", { class: "mono break" }, value))))),
        h("h3", {}, "Body ", h("span", { class: "muted" }, `(${request.bodySize} bytes${request.bodyTruncated ? `; only the first ${bytes(atob(request.bodyBase64).length)} were kept` : ""})`)),
        request.bodySize === 0 ? h("p", { class: "muted" }, "Empty.")
          : text === null ? h("p", { class: "muted", dataset: { testid: "binary" } },
            `A binary body (not UTF-8 text), so it is not shown. Its exact bytes are in bodyBase64 of GET ${API}/inspector/bins/…/requests.`)
          : h("pre", { class: "excerpt body" }, shown),
        h("p", { class: "meta" }, `Request #${request.seq}, received ${when(request.receivedAt)} from ${request.source}.`)));
  }

  /**
   * Follows a bin's server-sent events with fetch() and a stream reader: EventSource cannot send
   * the `Authorization` header the stream needs, and the key must not go in a URL. Reconnects
   * after a break, from the last request seen. Stops when the page is left.
   */
  function followBin(binId, after, on) {
    const controller = new AbortController();
    let stopped = false;
    let last = after;
    cleanup.push(() => { stopped = true; controller.abort(); });
    const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    (async () => {
      while (!stopped) {
        try {
          on.state("connecting", "Connecting…");
          const response = await fetch(`${API}/inspector/bins/${binId}/stream?after=${last}`, {
            headers: { Authorization: `Bearer ${session.key}`, Accept: "text/event-stream" },
            cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer", signal: controller.signal,
          });
          if (!response.ok) {
            let message = `The server answered ${response.status}.`;
            try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
            if (response.status === 404) { on.gone(message); return; }
            if (response.status === 401) { signOut("Your API key was refused (it may have been deleted). Sign in again with a valid key."); return; }
            throw new Error(message);
          }
          on.state("live", "Live: new requests appear here as they arrive.");
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer = (buffer + value).replace(/\r\n/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              let name = "message";
              const data = [];
              for (const line of block.split("\n")) {
                if (line.startsWith("event:")) name = line.slice(6).trim();
                else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
              }
              if (name === "request") {
                const request = JSON.parse(data.join("\n"));
                last = Math.max(last, request.seq);
                on.request(request);
              } else if (name === "gone") {
                on.gone(data.join("\n"));
                return;
              }
            }
          }
          if (!stopped) on.state("retrying", "The live connection closed; reconnecting…");
        } catch (error) {
          if (stopped) return;
          on.state("retrying", `The live connection broke (${describe(error)}); reconnecting…`);
        }
        await pause(2000);
      }
    })();
  }

  pages.inspector = {
    title: "Inspector",
    render(main, query) {
      const binId = query.get("bin");
      if (binId) this.renderBin(main, binId);
      else this.renderList(main);
    },

    renderList(main) {
      const list = h("div", { class: "bin-list", id: "bin-list" });
      const create = answerForm("bin-form", "Create a bin", "Create bin", { status: 200, headers: [], body: "", delayMs: 0 }, async (response) => {
        const bin = await api.post("/inspector/bins", response);
        toast("Bin created: send requests to its URL, or point a key's webhook at it.");
        location.hash = `#/inspector?bin=${bin.id}`;
      });
      main.append(
        h("div", { class: "page-head" }, h("h1", {}, "Inspector"),
          h("p", { class: "muted" }, "A bin is a URL on this server that records every request sent to it and answers as you configure. Point a key's webhook at one to see your callbacks exactly as a receiver gets them, and whether the bearer and signature check out.")),
        create, h("h2", { class: "section-title" }, "Your bins"), list);

      function binRow(bin) {
        const remove = h("button", { type: "button", class: "small danger", dataset: { testid: "delete-bin" } }, "Delete");
        remove.addEventListener("click", () => {
          if (!confirm("Delete this bin and the requests it recorded? Its URL then answers 404.")) return;
          busy(remove, async () => {
            await api.del(`/inspector/bins/${bin.id}`);
            toast("Bin deleted.");
            await load();
          });
        });
        return h("article", { class: "card bin", dataset: { id: bin.id, testid: "bin" } },
          urlField(bin.url),
          h("p", { class: "meta" }, `${bin.requestCount} request${bin.requestCount === 1 ? "" : "s"} · ${answerSummary(bin.response)} · expires ${when(bin.expiresAt)}`),
          h("div", { class: "row-actions" },
            h("a", { href: `#/inspector?bin=${bin.id}`, class: "small-link", dataset: { testid: "open-bin" } }, "Requests and settings →"),
            remove));
      }

      async function load() {
        const bins = (await api.get("/inspector/bins")).bins || [];
        clear(list);
        if (bins.length === 0) {
          list.append(emptyState("No bins yet",
            "Create one with the form above. Then send it a request (curl -X POST its URL), or create a key calling it back and generate with that key."));
        }
        for (const bin of bins) list.append(binRow(bin));
      }

      list.append(h("p", { class: "muted" }, "Loading your bins…"));
      load().catch((error) => {
        clear(list);
        if (error instanceof ApiError && error.status === 404 && error.code === "not-found") {
          list.append(emptyState("The inspector is off on this server", "The operator turns it on in the [inspector] settings."));
        } else showError(error);
      });
    },

    renderBin(main, binId) {
      const head = h("div", { id: "bin-head" });
      const panel = h("div", { id: "bin-panel" });
      const followState = h("p", { class: "follow-state", id: "follow-state", dataset: { state: "connecting" } }, "Connecting…");
      const list = h("div", { class: "request-list", id: "request-list" });
      const more = h("button", { type: "button", id: "requests-more", hidden: true }, "Show older requests");
      const seen = new Map();
      let count = 0;
      let nextBefore = null;
      let bin = null;
      let canManageKeys = null;
      main.append(
        h("p", {}, h("a", { href: "#/inspector" }, "← All bins")),
        h("div", { class: "page-head" }, h("h1", {}, "Inspector bin"),
          h("p", { class: "muted" }, "Every request sent to this bin's URL, newest first. Open one for its headers, body and callback checks.")),
        head, panel,
        h("div", { class: "section-title split-line" }, h("h2", {}, "Requests"), followState),
        list, h("div", { class: "more" }, more));

      function showHead() {
        const change = h("button", { type: "button", class: "small", id: "bin-change" }, "Change the answer");
        const hook = h("button", { type: "button", class: "small", id: "bin-key" }, "Create a key calling back this bin");
        const remove = h("button", { type: "button", class: "small danger", id: "bin-delete" }, "Delete bin");
        if (canManageKeys === false) {
          hook.disabled = true;
          hook.title = "Only a key with the manageKeys permission creates keys";
        }
        clear(head).append(h("section", { class: "card", dataset: { testid: "bin", id: bin.id } },
          urlField(bin.url),
          h("p", { class: "meta", id: "bin-facts" }, `${count} request${count === 1 ? "" : "s"} · ${answerSummary(bin.response)} · created ${when(bin.createdAt)} · expires ${when(bin.expiresAt)}`),
          h("p", { class: "meta" }, "Any method and any path under this URL lands here: ", h("code", {}, `curl -X POST ${bin.url}/hook -d 'hello'`)),
          canManageKeys === false ? h("p", { class: "meta" }, "To create a key calling back this bin, sign in with a key that may manage keys.") : null,
          h("div", { class: "row-actions" }, change, hook, remove)));
        change.addEventListener("click", () => {
          clear(panel).append(answerForm("bin-answer", "What this bin answers", "Save the answer", bin.response, async (response) => {
            bin = await api.put(`/inspector/bins/${bin.id}/response`, response);
            clear(panel);
            showHead();
            toast("Saved: the bin answers this way from the next request on.");
          }, () => clear(panel)));
        });
        hook.addEventListener("click", () => keyForm());
        remove.addEventListener("click", () => {
          if (!confirm("Delete this bin and the requests it recorded? Its URL then answers 404.")) return;
          busy(remove, async () => {
            await api.del(`/inspector/bins/${bin.id}`);
            toast("Bin deleted.");
            location.hash = "#/inspector";
          });
        });
      }

      function keyForm() {
        const random = crypto.getRandomValues(new Uint8Array(12));
        const name = h("input", { id: "bin-key-name", type: "text", maxlength: 100, value: `Calls back bin ${bin.id.slice(0, 8)}` });
        const hookKey = h("input", { id: "bin-key-hook-key", type: "text", spellcheck: "false", value: [...random].map((b) => b.toString(16).padStart(2, "0")).join("") });
        const error = h("p", { class: "error", role: "alert", hidden: true });
        const submit = h("button", { type: "submit", class: "primary", id: "bin-key-create" }, "Create the key");
        const form = h("form", { class: "card form-grid", id: "bin-key-form", novalidate: true },
          h("h2", { class: "card-title" }, "A key calling back this bin"),
          h("p", { class: "span-all muted" }, "Generations made with this key call back this bin. Easel hands such callbacks to the bin directly, signed like any other, so you can watch them arrive below."),
          h("div", { class: "field span-2" }, h("label", { for: "bin-key-name" }, "Key name"), name),
          h("div", { class: "field span-2" }, h("label", { for: "bin-key-hook-key" }, "Webhook callback API key ", h("span", { class: "muted" }, "(sent as Bearer; the bin checks it)")), hookKey),
          error,
          h("div", { class: "field actions span-all" }, h("button", { type: "button", class: "ghost", onclick: () => clear(panel) }, "Cancel"), submit));
        clear(panel).append(form);
        form.addEventListener("submit", (event) => {
          event.preventDefault();
          error.hidden = true;
          busy(submit, async () => {
            if (!name.value.trim()) throw new Error("Give the key a name, so you can tell it apart later.");
            const body = { name: name.value.trim(), webhookCallbackUrl: bin.url };
            if (hookKey.value.trim()) body.webhookCallbackApiKey = hookKey.value.trim();
            const created = await api.post("/keys", body);
            clear(panel).append(h("section", { class: "card reveal", dataset: { testid: "new-key" } },
              h("h2", { class: "card-title" }, `Key “${created.name}” created`),
              h("p", { class: "warning" }, "Copy the key and the signing secret now: they are shown only this once."),
              secretField("API key", created.key, "new-key-value"),
              secretField("Signing secret (verifies the webhook-signature of callbacks)", created.signingSecret, "new-key-secret"),
              h("p", { class: "meta" }, "Generate with this key (from your client, or sign in with it): each callback appears below with its checks."),
              h("button", { type: "button", class: "ghost small", onclick: () => clear(panel) }, "I have copied them")));
          }, error);
        });
      }

      function facts() {
        const el = $("#bin-facts");
        if (el && bin) el.textContent = `${count} request${count === 1 ? "" : "s"} · ${answerSummary(bin.response)} · created ${when(bin.createdAt)} · expires ${when(bin.expiresAt)}`;
      }

      function showEmpty() {
        if (seen.size === 0 && !list.querySelector(".empty")) {
          list.append(emptyState("No requests yet",
            "Send a request to the URL above (any method, any path below it), or generate with a key calling back this bin. It appears here as it arrives, without reloading."));
        }
      }

      function add(request, newest) {
        if (seen.has(request.seq)) return;
        const empty = list.querySelector(".empty");
        if (empty) empty.remove();
        const card = requestCard(request);
        seen.set(request.seq, card);
        if (newest) {
          list.prepend(card);
          card.classList.add("fresh");
        } else list.append(card);
      }

      async function older() {
        const answer = await api.get(`/inspector/bins/${binId}/requests?limit=20${nextBefore ? `&before=${nextBefore}` : ""}`);
        for (const request of answer.requests || []) add(request, false);
        nextBefore = answer.nextBefore;
        more.hidden = !nextBefore;
        return answer.requests || [];
      }
      more.addEventListener("click", () => busy(more, older));

      function gone(message) {
        followState.dataset.state = "gone";
        followState.textContent = `This bin is gone: ${message}. Create a new one on the inspector page.`;
      }

      list.append(h("p", { class: "muted" }, "Loading the requests…"));
      (async () => {
        try {
          bin = await api.get(`/inspector/bins/${binId}`);
        } catch (error) {
          clear(list);
          if (error instanceof ApiError && error.status === 404) {
            clear(head).append(emptyState("No such bin", "It expired, was deleted, or is not yours. Bins are listed on the inspector page.",
              "Create a new one there."));
            followState.remove();
            return;
          }
          throw error;
        }
        count = bin.requestCount;
        showHead();
        api.get("/keys").then(() => { canManageKeys = true; }).catch(() => { canManageKeys = false; showHead(); });
        clear(list);
        const first = await older();
        showEmpty();
        // From the newest request listed on: nothing captured in between is missed.
        followBin(binId, first.length ? first[0].seq : 0, {
          state(name, text) { followState.dataset.state = name; followState.textContent = text; },
          request(request) {
            if (!seen.has(request.seq)) count += 1;
            add(request, true);
            facts();
          },
          gone,
        });
      })().catch(showError);
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
