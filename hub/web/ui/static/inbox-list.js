// The conversation list: filters, search, rows, waiting badges and live updates.
"use strict";

const InboxList = (() => {
  const { byId, el } = { byId: Inbox.byId, el: Hub.el };
  const BADGE_MS = 30000; // waiting badges count minutes: redraw them twice a minute
  const PAGE = 100;
  let rows = []; // the conversations shown, in the API's shape
  let active = null; // the open conversation's id
  const filters = { statuses: new Set(), channel: "", assignee: "", unread: false, q: "" };

  function query() {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (filters.statuses.size) params.set("status", [...filters.statuses].join(","));
    if (filters.channel) params.set("channel", filters.channel);
    if (filters.assignee) params.set("assignee", filters.assignee);
    if (filters.unread) params.set("unread", "1");
    if (filters.q) params.set("q", filters.q);
    return params.toString();
  }

  // Answers can come back out of order (typing in the search box, live events): only the
  // latest request's answer is shown.
  let asked = 0;

  async function reload() {
    const mine = ++asked;
    try {
      const data = await Hub.api("GET", `/api/conversations?${query()}`);
      if (mine !== asked) return;
      rows = data.conversations || [];
      Inbox.showError(byId("list-error"), "");
    } catch (err) {
      if (mine === asked) Inbox.showError(byId("list-error"), Hub.t("error_load"));
      return;
    }
    render();
  }
  const reloadSoon = Inbox.debounce(reload, 300);

  // Waiting first (longest wait first), then the latest message first, as the API sorts.
  function sort() {
    const time = (iso) => (iso ? new Date(iso).getTime() : 0);
    rows.sort((a, b) => {
      const aw = a.status === "waiting";
      const bw = b.status === "waiting";
      if (aw !== bw) return aw ? -1 : 1;
      const since = (c) => time(c.waiting_since || c.last_message_at);
      if (aw) return since(a) - since(b);
      return time(b.last_message_at) - time(a.last_message_at);
    });
  }

  function preview(message) {
    if (!message) return "";
    const text = (message.text || "").trim();
    if (text) return text.length > 90 ? `${text.slice(0, 90)}…` : text;
    return message.attachments && message.attachments.length ? `📎 ${Hub.t("attachment")}` : "";
  }

  function waitingBadge(conv) {
    if (conv.status !== "waiting") return null;
    const since = conv.waiting_since || conv.last_message_at;
    if (!since) return null;
    return el(
      "span",
      { class: "badge badge-waiting", "data-since": since },
      Hub.t("waited", { time: Inbox.duration(since) }),
    );
  }

  function statusBadge(conv) {
    if (conv.status === "waiting") return waitingBadge(conv);
    const label = Hub.t(`status_${conv.status}`);
    return el("span", { class: `status-badge status-${conv.status}` }, label);
  }

  function unreadDot(conv) {
    if (!conv.unread) return null;
    return el("span", { class: "unread-dot", title: Hub.t("unread"), "aria-label": Hub.t("unread") });
  }

  function row(conv) {
    const name = Inbox.clientName(conv.client);
    const time = Inbox.shortTime(conv.last_message_at);
    const open = el(
      "button",
      { type: "button", class: "conv-open", onclick: () => Inbox.open(conv) },
      el(
        "span",
        { class: "conv-top" },
        Inbox.channelIcon(conv.channel),
        el("span", { class: "conv-name" }, name),
        el("time", { class: "conv-time", datetime: conv.last_message_at || "" }, time),
      ),
      el(
        "span",
        { class: "conv-bottom" },
        el("span", { class: "conv-preview" }, preview(conv.last_message)),
        statusBadge(conv),
        unreadDot(conv),
      ),
    );
    const classes = ["conv", `status-${conv.status}`];
    if (conv.unread) classes.push("is-unread");
    if (conv.id === active) classes.push("is-active");
    return el(
      "li",
      {
        class: classes.join(" "),
        "data-id": conv.id,
        "data-status": conv.status,
        "aria-current": conv.id === active ? "true" : null,
      },
      open,
    );
  }

  function render() {
    sort();
    byId("conversations").replaceChildren(...rows.map(row));
    byId("list-empty").hidden = rows.length > 0;
  }

  function refreshBadges() {
    for (const badge of document.querySelectorAll(".badge-waiting[data-since]")) {
      badge.textContent = Hub.t("waited", { time: Inbox.duration(badge.dataset.since) });
    }
  }

  function setActive(id) {
    active = id;
    const conv = rows.find((c) => c.id === id);
    if (conv) conv.unread = false;
    render();
  }

  // The conversation behind a link: in the list, else as marking it read answers it
  // (opening a conversation marks it read anyway).
  async function lookup(id) {
    const shown = rows.find((c) => c.id === id);
    if (shown) return shown;
    try {
      return await Hub.api("POST", `/api/conversations/${id}/read`);
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  function matchesFilters(conv) {
    if (filters.statuses.size && !filters.statuses.has(conv.status)) return false;
    return !filters.channel || conv.channel === filters.channel;
  }

  // A new message or a delivery status: patch the row at once, then ask the API for the
  // truth (a new conversation, filters, search) a moment later.
  function messageEvent(event) {
    const frame = event.message || event;
    const conv = rows.find((c) => c.id === event.conversation_id);
    if (conv) {
      const isNew = !conv.last_message || conv.last_message.id !== frame.id;
      if (isNew && frame.at && (!conv.last_message_at || frame.at >= conv.last_message_at)) {
        conv.last_message = frame;
        conv.last_message_at = frame.at;
      } else if (conv.last_message && conv.last_message.id === frame.id) {
        conv.last_message = { ...conv.last_message, ...frame };
      }
      if (event.conversation_status) conv.status = event.conversation_status;
      if (isNew && frame.direction === "in") {
        if (conv.status === "waiting" && !conv.waiting_since) conv.waiting_since = frame.at;
        if (conv.id !== active) conv.unread = true;
      }
      if (isNew && frame.direction === "out" && frame.author === "staff") conv.waiting_since = null;
      if (matchesFilters(conv)) render();
    }
    reloadSoon();
  }

  function conversationChanged(change) {
    const id = change.conversation_id || change.id;
    const conv = rows.find((c) => c.id === id);
    if (conv) {
      if (change.status) conv.status = change.status;
      if ("assignee_id" in change) conv.assignee_id = change.assignee_id;
      render();
    }
    reloadSoon();
  }

  function bindFilters() {
    for (const chip of document.querySelectorAll(".status-filter .chip")) {
      chip.addEventListener("click", () => {
        const status = chip.dataset.status;
        if (filters.statuses.has(status)) filters.statuses.delete(status);
        else filters.statuses.add(status);
        chip.setAttribute("aria-pressed", String(filters.statuses.has(status)));
        reload();
      });
    }
    byId("f-channel").addEventListener("change", (e) => {
      filters.channel = e.target.value;
      reload();
    });
    byId("f-assignee").addEventListener("change", (e) => {
      filters.assignee = e.target.value;
      reload();
    });
    byId("f-unread").addEventListener("change", (e) => {
      filters.unread = e.target.checked;
      reload();
    });
    const search = Inbox.debounce((value) => {
      filters.q = value.trim();
      reload();
    }, 250);
    byId("q").addEventListener("input", (e) => search(e.target.value));
    byId("filters").addEventListener("submit", (e) => e.preventDefault());
  }

  function init() {
    bindFilters();
    setInterval(refreshBadges, BADGE_MS);
  }

  return { init, reload, reloadSoon, setActive, lookup, messageEvent, conversationChanged };
})();
