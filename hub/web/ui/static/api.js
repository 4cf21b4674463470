// Shared by every inbox page: the JSON API with the session's CSRF token, live events, strings.
"use strict";

const Hub = (() => {
  const strings = JSON.parse(document.getElementById("strings").textContent);

  function t(key, values) {
    let text = strings[key] ?? key;
    for (const [name, value] of Object.entries(values || {})) {
      text = text.replaceAll(`{${name}}`, String(value));
    }
    return text;
  }

  function csrf() {
    const found = document.cookie.split("; ").find((c) => c.startsWith("hub_csrf="));
    return found ? decodeURIComponent(found.slice("hub_csrf=".length)) : "";
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  // fetch for the JSON API: sends the CSRF token on every change, goes to the login page
  // when the session has ended, and throws ApiError with the server's message otherwise.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    // After a sign-out the page's other requests get 401 too: the sign-out's own navigation
    // must win, or a second one aborts it and the login page comes with a stale ?next=.
    if (response.status === 401 && !signingOut && !location.pathname.startsWith("/inbox/login")) {
      location.href = `/inbox/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // Live events from GET /api/events (Server-Sent Events); the browser reconnects by itself.
  function listen(handlers) {
    const source = new EventSource("/api/events");
    for (const [kind, handler] of Object.entries(handlers)) {
      source.addEventListener(kind, (event) => handler(JSON.parse(event.data)));
    }
    return source;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  let signingOut = false;

  async function signOut() {
    signingOut = true;
    try {
      await api("POST", "/api/auth/logout");
    } finally {
      location.href = "/inbox/login";
    }
  }

  async function whoAmI() {
    const me = await api("GET", "/api/me");
    const label = document.getElementById("me");
    if (label) label.textContent = `${me.name || me.email} · ${t("role_" + me.role)}`;
    document.body.dataset.role = me.role;
    return me;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("logout");
    if (button) button.addEventListener("click", signOut);
  });

  return { api, listen, t, el, whoAmI, ApiError, lang: document.documentElement.lang };
})();
