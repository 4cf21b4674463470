// The client's card: contact data, tags, channels, appointments, the audit trail, merging.
"use strict";

const InboxCard = (() => {
  const { byId, el } = { byId: Inbox.byId, el: Hub.el };
  const FIELDS = ["name", "phone", "email", "language", "notes"];
  const LIVE = new Set(["booked", "confirmed"]);
  let card = null; // the card as GET /api/clients/{id} gives it
  let mergeWith = null; // the card picked to be merged into this one

  // Loading and showing -----------------------------------------------------------------

  async function show(clientId) {
    card = null;
    byId("card").hidden = true;
    byId("card-empty").hidden = false;
    resetMerge();
    await reload(clientId);
  }

  async function reload(clientId = card && card.id) {
    if (!clientId) return;
    try {
      const loaded = await Hub.api("GET", `/api/clients/${clientId}`);
      if (Inbox.state.open && Inbox.state.open.client.id !== clientId) return; // moved on
      card = loaded;
    } catch (err) {
      Inbox.showError(byId("card-error"), Hub.t("error_load"));
      return;
    }
    byId("card-empty").hidden = true;
    byId("card").hidden = false;
    fillForm();
    renderTags();
    renderIdentities();
    renderAppointments();
    renderAudit();
    InboxThread.setIdentities(card.identities);
    InboxThread.clientChanged(card);
  }

  function fillForm() {
    const form = byId("card-form");
    for (const name of FIELDS) form.elements[name].value = card[name] ?? "";
    form.elements.marketing_consent.checked = Boolean(card.marketing_consent);
    Inbox.showError(byId("card-error"), "");
  }

  function tagNode(tag) {
    const label = Hub.t("remove_tag", { tag });
    const remove = () => saveTags(card.tags.filter((t) => t !== tag));
    return el(
      "li",
      { class: "tag", "data-tag": tag },
      el("span", {}, tag),
      el("button", { type: "button", class: "link remove", title: label, "aria-label": label, onclick: remove }, "×"),
    );
  }

  function renderTags() {
    byId("tags").replaceChildren(...(card.tags || []).map(tagNode));
  }

  // A list, or a muted "none" line when it is empty.
  function fillList(id, nodes) {
    byId(id).replaceChildren(...(nodes.length ? nodes : [el("li", { class: "muted" }, Hub.t("none_yet"))]));
  }

  function renderIdentities() {
    const rows = (card.identities || []).map((i) =>
      el(
        "li",
        { class: "identity", "data-channel": i.channel },
        Inbox.channelIcon(i.channel),
        el("span", {}, Inbox.identityLabel(i)),
        el("span", { class: "muted small" }, ` ${i.inbox}`),
      ),
    );
    fillList("identities", rows);
  }

  function appointment(a) {
    const service = a.service && a.service.name ? a.service.name[Hub.lang] || a.service.name.en || "" : "";
    return el(
      "li",
      { class: `appt appt-${a.status}`, "data-id": a.id },
      el("time", { datetime: a.start }, Inbox.fullTime(a.start)),
      el("span", {}, ` ${service}`),
      a.master ? el("span", { class: "muted" }, ` · ${a.master.name}`) : null,
      el("span", { class: `status-badge appt-status` }, Hub.t(`appt_${a.status}`)),
    );
  }

  function renderAppointments() {
    const now = Date.now();
    const all = card.appointments || [];
    const upcoming = all
      .filter((a) => new Date(a.start).getTime() >= now && LIVE.has(a.status))
      .sort((a, b) => new Date(a.start) - new Date(b.start));
    const past = all.filter((a) => !upcoming.includes(a));
    fillList("appts-upcoming", upcoming.map(appointment));
    fillList("appts-past", past.map(appointment));
    renderRecord();
  }

  // How many visits the client came to and missed, over all their appointments.
  function renderRecord() {
    let line = byId("card-record");
    if (!line) {
      line = el("p", { id: "card-record", class: "small" });
      byId("appts-upcoming").parentElement.prepend(line);
    }
    const noShows = card.no_shows || 0;
    line.dataset.noShows = String(noShows);
    line.dataset.visits = String(card.visits || 0);
    line.className = noShows ? "small error" : "small muted";
    line.textContent = Hub.t("visits_line", { visits: card.visits || 0, no_shows: noShows });
  }

  function value(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (Array.isArray(v)) return v.length ? v.join(", ") : "—";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // "phone: +380… → +380…" for each [before, after] pair; anything else as it is.
  function changeLines(changes) {
    return Object.entries(changes || {}).map(([field, change]) => {
      const pair = Array.isArray(change) && change.length === 2;
      const text = pair ? `${value(change[0])} → ${value(change[1])}` : value(change);
      return el(
        "li",
        { class: "change", "data-field": field },
        el("span", { class: "field" }, `${field}: `),
        text,
      );
    });
  }

  function renderAudit() {
    const entries = card.audit || [];
    byId("audit-count").textContent = `(${entries.length})`;
    const rows = entries.map((e) => {
      const who = e.staff_id
        ? Inbox.staffName(e.staff_id) || Hub.t("actor_staff")
        : Hub.t(`actor_${e.actor}`);
      const at = el("time", { datetime: e.at }, Inbox.fullTime(e.at));
      return el(
        "li",
        { class: "audit-entry", "data-action": e.action },
        el("div", { class: "audit-head" }, at, ` · ${who} · ${e.entity} ${e.action}`),
        el("ul", { class: "plain changes" }, changeLines(e.changes)),
      );
    });
    byId("audit-list").replaceChildren(...rows);
  }

  // Editing -----------------------------------------------------------------------------

  // Only what really changed goes to the API: an unchanged card writes no audit entry.
  function changedFields() {
    const form = byId("card-form");
    const changes = {};
    for (const name of FIELDS) {
      const now = form.elements[name].value.trim();
      const before = card[name] ?? "";
      if (now === before) continue;
      changes[name] = now === "" && name !== "notes" ? null : now;
    }
    const consent = form.elements.marketing_consent.checked;
    if (consent !== Boolean(card.marketing_consent)) changes.marketing_consent = consent;
    return changes;
  }

  async function patch(changes) {
    Inbox.showError(byId("card-error"), "");
    byId("card-saved").hidden = true;
    try {
      await Hub.api("PATCH", `/api/clients/${card.id}`, changes);
    } catch (err) {
      Inbox.showError(byId("card-error"), Hub.t("error_save", { reason: Inbox.reason(err) }));
      return false;
    }
    await reload();
    byId("card-saved").hidden = false;
    InboxList.reloadSoon(); // a new name or phone shows in the list
    return true;
  }

  async function save(event) {
    event.preventDefault();
    if (!card) return;
    const changes = changedFields();
    if (Object.keys(changes).length) await patch(changes);
  }

  async function saveTags(tags) {
    if (card) await patch({ tags });
  }

  async function addTag(event) {
    event.preventDefault();
    const input = byId("tag-input");
    const tag = input.value.trim();
    if (!card || !tag) return;
    if ((card.tags || []).includes(tag)) {
      input.value = "";
      return;
    }
    if (await saveTags([...(card.tags || []), tag])) input.value = "";
  }

  // Merging -----------------------------------------------------------------------------

  function resetMerge() {
    mergeWith = null;
    byId("merge-done").hidden = true;
    byId("merge-q").value = "";
    byId("merge-results").replaceChildren();
    byId("merge-confirm").hidden = true;
    Inbox.showError(byId("merge-error"), "");
  }

  async function searchMerge() {
    const q = byId("merge-q").value.trim();
    const results = byId("merge-results");
    if (!card || q.length < 2) {
      results.replaceChildren();
      return;
    }
    try {
      const data = await Hub.api("GET", `/api/clients?${new URLSearchParams({ q, limit: "10" })}`);
      const found = (data.clients || []).filter((c) => c.id !== card.id && !c.merged_into_id);
      const rows = found.map((c) =>
        el(
          "li",
          { class: "merge-result", "data-id": c.id },
          el("span", {}, Inbox.clientName(c)),
          el("span", { class: "muted small" }, ` ${[c.phone, c.email].filter(Boolean).join(" · ")}`),
          el("button", { type: "button", class: "secondary", onclick: () => askMerge(c) }, Hub.t("merge_pick")),
        ),
      );
      results.replaceChildren(...(rows.length ? rows : [el("li", { class: "muted" }, Hub.t("merge_none"))]));
    } catch (err) {
      Inbox.showError(byId("merge-error"), Hub.t("error_load"));
    }
  }

  function askMerge(other) {
    mergeWith = other;
    byId("merge-question").textContent = Hub.t("merge_question", {
      other: Inbox.clientName(other),
      this: Inbox.clientName(card),
    });
    byId("merge-confirm").hidden = false;
  }

  async function merge() {
    if (!card || !mergeWith) return;
    try {
      await Hub.api("POST", `/api/clients/${card.id}/merge`, { other_id: mergeWith.id });
    } catch (err) {
      Inbox.showError(byId("merge-error"), Hub.t("error_action", { reason: Inbox.reason(err) }));
      return;
    }
    resetMerge();
    byId("merge-done").hidden = false;
    await reload();
    InboxThread.refresh(); // the other card's history is this client's now
    InboxList.reloadSoon();
  }

  function init() {
    byId("card-form").addEventListener("submit", save);
    byId("tag-form").addEventListener("submit", addTag);
    byId("merge-q").addEventListener("input", Inbox.debounce(searchMerge, 250));
    byId("merge-yes").addEventListener("click", merge);
    byId("merge-no").addEventListener("click", () => {
      mergeWith = null;
      byId("merge-confirm").hidden = true;
    });
  }

  return { init, show, reload };
})();
