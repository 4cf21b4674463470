// One conversation: the client's whole timeline across channels, the actions on the
// conversation (take, give back, close, assign) and the reply box.
"use strict";

const InboxThread = (() => {
  const { byId, el } = { byId: Inbox.byId, el: Hub.el };
  const PAGE = 100;
  // `sending`: a dispatcher has claimed the reply and is handing it to the provider.
  const TICKS = { queued: "◷", sending: "◷", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "⚠" };
  let conv = null; // the open conversation (a row of the list)
  let items = []; // the timeline, oldest first
  let more = false;
  let replyKey = null; // one idempotency key per reply, kept while it is retried

  const keyOf = (item) => `${item.kind || "message"}:${item.id}`;
  const isMine = () => conv && Inbox.state.me && conv.assignee_id === Inbox.state.me.id;

  // Header ---------------------------------------------------------------------------

  function renderHead() {
    byId("thread-name").textContent = conv ? Inbox.clientName(conv.client) : "";
    const badge = byId("thread-status");
    badge.hidden = !conv;
    byId("thread-actions").hidden = !conv;
    byId("show-card").hidden = !conv;
    byId("reply").hidden = !conv;
    byId("thread-empty").hidden = Boolean(conv);
    byId("thread-pane").classList.toggle("has-conv", Boolean(conv));
    if (!conv) return;
    badge.className = `status-badge status-${conv.status}`;
    badge.textContent = Hub.t(`status_${conv.status}`);
    // A closed conversation can't be taken or assigned (the API answers 409).
    byId("act-take").hidden = conv.status === "closed" || (conv.status === "human" && isMine());
    byId("act-release").hidden = !["human", "waiting"].includes(conv.status);
    byId("act-close").hidden = conv.status === "closed";
    byId("act-assign").value = conv.assignee_id ? String(conv.assignee_id) : "";
    byId("act-assign").disabled = conv.status === "closed";
  }

  function fillAssign() {
    const select = byId("act-assign");
    const options = Inbox.state.staff.map((s) => el("option", { value: s.id }, s.name || s.email));
    select.replaceChildren(select.options[0], ...options);
  }

  async function act(path, body, predicted) {
    if (!conv) return;
    Inbox.showError(byId("thread-error"), "");
    try {
      const answer = await Hub.api("POST", `/api/conversations/${conv.id}/${path}`, body);
      Object.assign(conv, predicted, pick(answer));
    } catch (err) {
      Inbox.showError(byId("thread-error"), Hub.t("error_action", { reason: Inbox.reason(err) }));
    }
    renderHead();
    InboxList.reloadSoon();
  }

  // Only what the answer says about the conversation itself.
  function pick(answer) {
    const out = {};
    if (answer && typeof answer === "object") {
      if (answer.status) out.status = answer.status;
      if ("assignee_id" in answer) out.assignee_id = answer.assignee_id;
    }
    return out;
  }

  // Timeline ---------------------------------------------------------------------------

  function authorOf(item) {
    if (item.direction === "in") return Inbox.clientName(conv && conv.client) || Hub.t("author_client");
    if (item.author === "staff") {
      return (item.staff && item.staff.name) || Inbox.staffName(item.staff_id) || Hub.t("author_staff");
    }
    return Hub.t(`author_${item.author || "system"}`);
  }

  function tick(item) {
    if (item.direction !== "out" || !TICKS[item.status]) return null;
    const label = Hub.t(`tick_${item.status}`);
    const title = item.status === "failed" && item.error ? `${label}: ${item.error}` : label;
    const attrs = { class: `tick tick-${item.status}`, title, "aria-label": title };
    if (item.error) Object.assign(attrs, { role: "button", tabindex: "0" });
    const node = el("span", attrs, TICKS[item.status]);
    if (item.status === "failed" && item.error) {
      // A tap shows the error where there is no hover (a phone).
      const shown = el("span", { class: "tick-error", hidden: true }, item.error);
      const toggle = () => {
        shown.hidden = !shown.hidden;
      };
      node.addEventListener("click", toggle);
      node.addEventListener("keydown", (e) => e.key === "Enter" && toggle());
      return [node, shown];
    }
    return node;
  }

  function attachment(file) {
    const href = file.download || file.url;
    const name = file.name || Hub.t("attachment");
    if (!href) return el("span", { class: "file" }, `📎 ${name}`);
    const isImage = file.kind === "image" || (file.mime_type || "").startsWith("image/");
    if (isImage) {
      const image = el("img", { src: href, alt: name, loading: "lazy" });
      return el("a", { href, target: "_blank", rel: "noopener", class: "image" }, image);
    }
    return el("a", { href, download: file.name || "", class: "file" }, `📎 ${name}`);
  }

  function itemNode(item) {
    const at = el(
      "time",
      { datetime: item.at, title: Inbox.fullTime(item.at) },
      Inbox.shortTime(item.at),
    );
    if (item.kind === "note") {
      return el(
        "li",
        { class: "item note", "data-key": keyOf(item), "data-id": item.id },
        el("div", { class: "bubble" }, item.text),
        el(
          "div",
          { class: "meta" },
          el("span", { class: "note-label" }, Hub.t("note_label")),
          el("span", { class: "who" }, (item.staff && item.staff.name) || Hub.t("author_staff")),
          at,
        ),
      );
    }
    const files = (item.attachments || []).map(attachment);
    return el(
      "li",
      {
        class: `item msg dir-${item.direction} author-${item.author}`,
        "data-key": keyOf(item),
        "data-id": item.id,
        "data-status": item.status,
        "data-channel": item.channel,
      },
      el(
        "div",
        { class: "bubble" },
        item.text ? el("p", { class: "text" }, item.text) : null,
        files.length ? el("div", { class: "files" }, files) : null,
      ),
      el(
        "div",
        { class: "meta" },
        item.channel ? Inbox.channelIcon(item.channel) : null,
        el("span", { class: "who" }, authorOf(item)),
        at,
        tick(item),
      ),
    );
  }

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function render({ stick = true } = {}) {
    const list = byId("timeline");
    const keep = nearBottom(list);
    list.replaceChildren(...items.map(itemNode));
    byId("timeline-more").hidden = !more;
    if (stick || keep) list.scrollTop = list.scrollHeight;
  }

  // Delivery only moves forward; a late answer (the reply's own "queued") must not undo a
  // receipt that came first over the live stream.
  const RANK = { queued: 1, sending: 2, sent: 3, delivered: 4, read: 5, failed: 6 };
  function merged(old, item) {
    const next = { ...old, ...item };
    if ((RANK[old.status] || 0) > (RANK[item.status] || 0)) {
      next.status = old.status;
      next.error = old.error;
    }
    return next;
  }

  // Add a new item in time order, or update one already shown (a delivery status).
  function upsert(item) {
    const key = keyOf(item);
    const index = items.findIndex((i) => keyOf(i) === key);
    if (index >= 0) {
      items[index] = merged(items[index], item);
      const node = byId("timeline").querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (node) node.replaceWith(itemNode(items[index]));
      return;
    }
    items.push(item);
    items.sort((a, b) => new Date(a.at) - new Date(b.at));
    render({ stick: false });
  }

  // The loaded page, without losing what live events brought while it was on its way.
  function reconcile(fresh) {
    const shown = new Map(items.map((i) => [keyOf(i), i]));
    const loaded = new Set(fresh.map(keyOf));
    const from = fresh.length ? new Date(fresh[0].at) : null;
    const next = fresh.map((i) => (shown.has(keyOf(i)) ? merged(shown.get(keyOf(i)), i) : i));
    for (const [key, item] of shown) {
      if (!loaded.has(key) && (!from || new Date(item.at) >= from)) next.push(item);
    }
    return next.sort((a, b) => new Date(a.at) - new Date(b.at));
  }

  async function load() {
    if (!conv) return;
    const clientId = conv.client.id;
    try {
      const data = await Hub.api("GET", `/api/clients/${clientId}/timeline?limit=${PAGE}`);
      if (!conv || conv.client.id !== clientId) return; // another one was opened meanwhile
      items = reconcile(data.items || []);
      more = Boolean(data.more);
      Inbox.showError(byId("thread-error"), "");
      render();
    } catch (err) {
      const text = err.status === 403 ? Hub.t("error_not_yours") : Hub.t("error_load");
      Inbox.showError(byId("thread-error"), text);
    }
  }

  async function loadEarlier() {
    const oldest = items[0];
    if (!conv || !oldest) return;
    try {
      // The API pages back by time: items before the oldest one shown.
      const query = new URLSearchParams({ limit: String(PAGE), before: oldest.at });
      const data = await Hub.api("GET", `/api/clients/${conv.client.id}/timeline?${query}`);
      const known = new Set(items.map(keyOf));
      items = [...(data.items || []).filter((i) => !known.has(keyOf(i))), ...items];
      more = Boolean(data.more);
      render({ stick: false });
      byId("timeline").scrollTop = 0;
    } catch (err) {
      Inbox.showError(byId("thread-error"), Hub.t("error_load"));
    }
  }

  async function markRead() {
    if (!conv) return;
    try {
      await Hub.api("POST", `/api/conversations/${conv.id}/read`);
    } catch {
      // Unread dots are a convenience: a failure here must not disturb the conversation.
    }
  }
  const markReadSoon = Inbox.debounce(markRead, 500);
  const loadSoon = Inbox.debounce(() => load(), 500);

  // Live ----------------------------------------------------------------------------------

  function belongs(event) {
    if (!conv) return false;
    if (event.client_id !== undefined) return event.client_id === conv.client.id;
    return items.some((i) => i.conversation_id === event.conversation_id);
  }

  function messageEvent(event) {
    if (event.conversation_id === (conv && conv.id) && event.conversation_status) {
      conv.status = event.conversation_status;
      renderHead();
    }
    if (!belongs(event)) return;
    const frame = event.message || event;
    upsert({
      kind: "message",
      conversation_id: event.conversation_id,
      channel: event.channel,
      inbox: event.inbox,
      ...frame,
    });
    if (frame.direction === "in" && document.visibilityState === "visible") markReadSoon();
    // A live frame carries no error text and no staff name: the timeline has them.
    const shown = items.find((i) => keyOf(i) === `message:${frame.id}`);
    const nameless = frame.author === "staff" && !(shown && shown.staff);
    if ((frame.status === "failed" && !frame.error) || nameless) loadSoon();
  }

  // The card was edited: the header and the client's messages show the new name.
  function clientChanged(client) {
    if (!conv || conv.client.id !== client.id) return;
    Object.assign(conv.client, {
      name: client.name,
      phone: client.phone,
      email: client.email,
      tags: client.tags,
    });
    renderHead();
    render({ stick: false });
  }

  function conversationChanged(change) {
    const id = change.conversation_id || change.id;
    if (!conv || id !== conv.id) return;
    Object.assign(conv, pick(change));
    renderHead();
  }

  // Reply box ----------------------------------------------------------------------------

  function setIdentities(identities) {
    const select = byId("reply-channel");
    const seen = new Set();
    const options = [];
    for (const id of identities || []) {
      const value = `${id.channel}\u001f${id.inbox}`;
      if (seen.has(value)) continue;
      seen.add(value);
      const who = Inbox.identityLabel(id);
      const channel = Hub.t(`channel_${id.channel}`);
      options.push(el("option", { value }, who === channel ? channel : `${channel} · ${who}`));
    }
    select.replaceChildren(select.options[0], ...options);
  }

  function fillCanned() {
    const select = byId("canned");
    select.hidden = Inbox.state.canned.length === 0;
    const options = Inbox.state.canned.map((c) =>
      el("option", { value: c.id }, c.language ? `${c.title} (${c.language})` : c.title),
    );
    select.replaceChildren(select.options[0], ...options);
  }

  function insertCanned(event) {
    const found = Inbox.state.canned.find((c) => String(c.id) === event.target.value);
    event.target.value = "";
    if (!found) return;
    const box = byId("reply-text");
    const start = box.selectionStart ?? box.value.length;
    const end = box.selectionEnd ?? box.value.length;
    box.value = box.value.slice(0, start) + found.text + box.value.slice(end);
    box.focus();
    box.selectionStart = box.selectionEnd = start + found.text.length;
  }

  function noteMode() {
    const note = byId("reply-note").checked;
    byId("reply").classList.toggle("is-note", note);
    byId("reply-text").placeholder = Hub.t(note ? "note_placeholder" : "reply_placeholder");
    byId("reply-send").textContent = Hub.t(note ? "save_note" : "send");
    byId("reply-channel").disabled = note;
  }

  async function saveNote(text) {
    const body = { text, conversation_id: conv.id };
    const saved = await Hub.api("POST", `/api/clients/${conv.client.id}/notes`, body);
    upsert({ kind: "note", ...saved });
  }

  // On the chosen channel, else the one the client wrote on last (the API picks it).
  async function sendReply(text) {
    const body = { text, idempotency_key: replyKey };
    const [channel, inbox] = byId("reply-channel").value.split("\u001f");
    if (channel) Object.assign(body, { channel, inbox });
    const frame = await Hub.api("POST", `/api/clients/${conv.client.id}/messages`, body);
    const base = { kind: "message", direction: "out", author: "staff" };
    upsert({ ...base, channel: channel || conv.channel, ...frame });
    if (!frame.conversation_id || frame.conversation_id === conv.id) {
      Object.assign(conv, { status: "human", assignee_id: Inbox.state.me.id });
      renderHead();
    } else {
      await follow(frame.conversation_id); // a closed chat's reply opens a new conversation
    }
    InboxList.reloadSoon();
  }

  async function send(event) {
    event.preventDefault();
    const box = byId("reply-text");
    const text = box.value.trim();
    if (!conv || !text) return;
    const button = byId("reply-send");
    button.disabled = true;
    Inbox.showError(byId("reply-error"), "");
    replyKey = replyKey || Inbox.newKey();
    try {
      if (byId("reply-note").checked) await saveNote(text);
      else await sendReply(text);
      box.value = "";
      replyKey = null;
    } catch (err) {
      Inbox.showError(byId("reply-error"), Hub.t("error_send", { reason: Inbox.reason(err) }));
    } finally {
      button.disabled = false;
      box.focus();
    }
  }

  async function follow(conversationId) {
    try {
      const found = await InboxList.lookup(conversationId);
      if (!found) return;
      conv = found;
      Inbox.follow(found);
      renderHead();
    } catch {
      // The reply is sent; the header catches up with the next event.
    }
  }

  function onKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      byId("reply").requestSubmit();
    }
  }

  // Lifecycle ------------------------------------------------------------------------------

  function open(conversation) {
    conv = conversation;
    items = [];
    more = false;
    replyKey = null;
    byId("reply-text").value = "";
    Inbox.showError(byId("reply-error"), "");
    Inbox.showError(byId("thread-error"), "");
    setIdentities([]);
    render();
    renderHead();
    load();
    markRead();
  }

  function init() {
    fillAssign();
    fillCanned();
    renderHead();
    // What each action will most likely do, shown at once; the API's answer corrects it.
    const take = () => act("take", undefined, { status: "human", assignee_id: Inbox.state.me.id });
    byId("act-take").addEventListener("click", take);
    byId("act-release").addEventListener("click", () => act("release", undefined, { status: "bot" }));
    byId("act-close").addEventListener("click", () => act("close", undefined, { status: "closed" }));
    byId("act-assign").addEventListener("change", (e) => {
      const staffId = e.target.value ? Number(e.target.value) : null;
      act("assign", { staff_id: staffId }, { assignee_id: staffId });
    });
    byId("timeline-more").addEventListener("click", loadEarlier);
    byId("reply").addEventListener("submit", send);
    byId("reply-text").addEventListener("keydown", onKey);
    byId("reply-note").addEventListener("change", noteMode);
    byId("canned").addEventListener("change", insertCanned);
  }

  return {
    init,
    open,
    fillCanned,
    refresh: load,
    messageEvent,
    conversationChanged,
    clientChanged,
    setIdentities,
  };
})();
