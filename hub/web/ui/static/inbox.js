// The inbox page: shared helpers and state, loaded before inbox-list.js, inbox-thread.js and
// inbox-card.js; start() wires the three panes together once they have all loaded.
"use strict";

const Inbox = (() => {
  const state = { me: null, staff: [], canned: [], open: null };
  const byId = (id) => document.getElementById(id);
  const CHANNELS = ["telegram", "instagram", "viber", "sms", "email", "webchat"];
  // Without live events (the stream refused or gone for good) the page polls instead.
  const POLL_MS = 5000;

  function channelIcon(channel) {
    const known = CHANNELS.includes(channel);
    return Hub.el("img", {
      class: "channel-icon",
      src: `/inbox/static/icons/${known ? channel : "channel"}.svg`,
      alt: known ? Hub.t(`channel_${channel}`) : channel || "",
      title: known ? Hub.t(`channel_${channel}`) : channel || "",
      width: 16,
      height: 16,
    });
  }

  function clientName(client) {
    if (!client) return "";
    return client.name || client.phone || client.email || Hub.t("no_name", { id: client.id });
  }

  // How a client is known on a channel: @username, a name, else the address (a web chat
  // visitor's id means nothing to a person: the channel's name says enough).
  function identityLabel(identity) {
    if (identity.username) return `@${identity.username}`;
    if (identity.display_name) return identity.display_name;
    if (identity.channel === "webchat") return Hub.t("channel_webchat");
    return identity.external_id || "";
  }

  function staffName(id) {
    const found = state.staff.find((s) => s.id === id);
    return found ? found.name || found.email : null;
  }

  const sameDay = (a, b) => a.toDateString() === b.toDateString();

  // Today: the time; this year: day and month; older: the full date.
  function shortTime(iso) {
    if (!iso) return "";
    const at = new Date(iso);
    const now = new Date();
    const options = sameDay(at, now)
      ? { hour: "2-digit", minute: "2-digit" }
      : at.getFullYear() === now.getFullYear()
        ? { day: "numeric", month: "short" }
        : { day: "numeric", month: "short", year: "numeric" };
    return new Intl.DateTimeFormat(Hub.lang, options).format(at);
  }

  function fullTime(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(Hub.lang, { dateStyle: "medium", timeStyle: "short" }).format(
      new Date(iso),
    );
  }

  // "12 min", "1 h 5 min", "3 d": how long a client has waited.
  function duration(sinceIso) {
    const minutes = Math.max(0, Math.floor((Date.now() - new Date(sinceIso).getTime()) / 60000));
    if (minutes < 60) return Hub.t("minutes_short", { n: minutes });
    if (minutes < 24 * 60) {
      return Hub.t("hours_short", { h: Math.floor(minutes / 60), m: minutes % 60 });
    }
    return Hub.t("days_short", { n: Math.floor(minutes / (24 * 60)) });
  }

  // A short reason for a refused request, in the page's language where we know it.
  function reason(err) {
    if (!err || err.status === undefined) return Hub.t("error_offline");
    if (err.status === 403) return Hub.t("forbidden");
    const details = err.body && err.body.details;
    if (Array.isArray(details) && details.length) {
      return details.map((d) => `${Hub.t("field_" + d.field)}: ${d.error}`).join("; ");
    }
    return err.message || Hub.t("error_generic");
  }

  function showError(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function setView(view) {
    byId("inbox").dataset.view = view;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function newKey() {
    return (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)).replaceAll(
      "-",
      "",
    );
  }

  // The conversation in the address bar (?c=ID), so a link opens it.
  function linked() {
    const id = Number(new URLSearchParams(location.search).get("c"));
    return Number.isInteger(id) && id > 0 ? id : null;
  }

  function remember(conversationId) {
    const url = new URL(location.href);
    if (conversationId) url.searchParams.set("c", conversationId);
    else url.searchParams.delete("c");
    if (url.href !== location.href) history.pushState({ c: conversationId }, "", url);
  }

  async function open(conversation, { push = true } = {}) {
    state.open = conversation;
    if (push) remember(conversation.id);
    InboxList.setActive(conversation.id);
    setView("thread");
    InboxThread.open(conversation);
    InboxCard.show(conversation.client.id);
  }

  // The open conversation became another one (a reply to a closed chat starts a new one).
  function follow(conversation) {
    state.open = conversation;
    remember(conversation.id);
    InboxList.setActive(conversation.id);
  }

  async function openLinked() {
    const id = linked();
    if (!id) {
      state.open = null;
      InboxList.setActive(null);
      setView("list");
      return;
    }
    try {
      const conversation = await InboxList.lookup(id);
      if (conversation) await open(conversation, { push: false });
      else showError(byId("inbox-error"), Hub.t("error_not_found"));
    } catch (err) {
      const text = err.status === 403 ? Hub.t("error_not_yours") : Hub.t("error_load");
      showError(byId("inbox-error"), text);
    }
  }

  // A client changed an appointment through the bot: the card shows it, and a cancellation
  // (a free time now, perhaps someone to call) is told to staff in a notice.
  function appointmentChanged(change) {
    if (state.open && state.open.client.id === change.client_id) InboxCard.reload();
    if (change.status !== "cancelled" || change.by !== "client") return;
    const client = change.client_name || Hub.t("no_name", { id: change.client_id });
    notify(Hub.t("client_cancelled", { client, when: fullTime(change.start) }), change.conversation_id);
  }

  // One notice at a time at the top of the page, until dismissed or replaced.
  function notify(text, conversationId) {
    let node = byId("inbox-notice");
    if (!node) {
      node = Hub.el("div", { id: "inbox-notice", class: "banner notice", role: "status" });
      byId("inbox").prepend(node);
    }
    const openIt = async () => {
      node.hidden = true;
      const conversation = await InboxList.lookup(conversationId).catch(() => null);
      if (conversation) await open(conversation);
    };
    const parts = [Hub.el("span", { class: "notice-text" }, text), " "];
    if (conversationId) {
      parts.push(
        Hub.el("button", { type: "button", class: "link notice-open", onclick: openIt }, Hub.t("open_conversation")),
        " ",
      );
    }
    parts.push(Hub.el("button", {
      type: "button", class: "link notice-close", "aria-label": Hub.t("dismiss"), title: Hub.t("dismiss"),
      onclick: () => { node.hidden = true; },
    }, "×"));
    node.replaceChildren(...parts);
    node.hidden = false;
  }

  // A conversation changed outside the page (a take, a release, another staff member).
  function conversationChanged(change) {
    InboxList.conversationChanged(change);
    InboxThread.conversationChanged(change);
  }

  function live() {
    let polling = null;
    const source = Hub.listen({
      message: (event) => {
        InboxList.messageEvent(event);
        InboxThread.messageEvent(event);
      },
      conversation: conversationChanged,
      appointment: appointmentChanged,
    });
    // body[data-live] says whether live updates flow (tests wait for it too).
    source.addEventListener("open", () => {
      document.body.dataset.live = "on";
    });
    source.addEventListener("error", () => {
      document.body.dataset.live = "off";
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      if (polling) return;
      polling = setInterval(() => {
        InboxList.reload();
        InboxThread.refresh();
      }, POLL_MS);
    });
  }

  async function loadStaffAndCanned() {
    const isAdmin = state.me && state.me.role !== "master";
    const [staff, canned] = await Promise.allSettled([
      isAdmin ? Hub.api("GET", "/api/staff") : Promise.resolve([]),
      Hub.api("GET", "/api/canned"),
    ]);
    if (staff.status === "fulfilled") state.staff = listOf(staff.value, "staff");
    if (canned.status === "fulfilled") state.canned = listOf(canned.value, "canned");
  }

  // Lists come bare or wrapped ({"staff": [...]}); accept both.
  function listOf(value, key) {
    if (Array.isArray(value)) return value;
    return (value && Array.isArray(value[key]) && value[key]) || [];
  }

  async function start() {
    try {
      state.me = await Hub.whoAmI();
    } catch (err) {
      showError(byId("inbox-error"), Hub.t("error_load"));
      return;
    }
    await loadStaffAndCanned();
    InboxThread.init();
    InboxCard.init();
    InboxList.init();
    byId("back-to-list").addEventListener("click", () => {
      remember(null);
      state.open = null;
      InboxList.setActive(null);
      setView("list");
    });
    byId("show-card").addEventListener("click", () => setView("card"));
    byId("back-to-thread").addEventListener("click", () => setView("thread"));
    window.addEventListener("popstate", openLinked);
    live();
    await InboxList.reload();
    await openLinked();
  }

  document.addEventListener("DOMContentLoaded", start);

  return {
    state,
    byId,
    channelIcon,
    clientName,
    identityLabel,
    staffName,
    shortTime,
    fullTime,
    duration,
    reason,
    showError,
    setView,
    debounce,
    newKey,
    open,
    follow,
  };
})();
