// Broadcasts (owner/admin): the list with status and progress; a form (segment → live count,
// text or template, now or later); a broadcast's progress and recipients, refreshed every few
// seconds while it is scheduled or sending; cancel. Everything goes through the JSON API
// (docs/broadcasts.md); the API refuses masters, and the page tells them so.
"use strict";

(() => {
  const { api, el, t } = Hub;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 3000;
  const PREVIEW_DELAY_MS = 300;
  const LIVE = ["scheduled", "sending"];
  const PAGE = 50;
  const MAX_TEXT = 2000;

  const state = {
    business: null,
    services: [],
    templates: [],
    list: [],
    current: null, // the broadcast shown, as the API answered it
    editing: null, // the draft in the form, or null for a new one
    shown: 0, // recipients listed so far
    poll: null,
    previewTimer: null,
    previewSeq: 0,
  };

  // Times ------------------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  // The API answers in the salon's wall clock with its offset: read the text as it is.
  const when = (iso) => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 16)}` : "");

  function offsetAt(utcMs, tz) {
    const format = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    const p = Object.fromEntries(format.formatToParts(new Date(utcMs)).map((x) => [x.type, x.value]));
    const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
    return Math.round((wall - utcMs) / 60000);
  }

  // "2027-03-10T10:00" (a datetime-local value, the salon's time) → ISO with the offset.
  function zonedIso(local, tz) {
    const [date, clock] = local.split("T");
    const [y, m, d] = date.split("-").map(Number);
    const [hh, mm] = clock.split(":").map(Number);
    const wall = Date.UTC(y, m - 1, d, hh, mm);
    const offset = offsetAt(wall - offsetAt(wall, tz) * 60000, tz);
    const sign = offset < 0 ? "-" : "+";
    const abs = Math.abs(offset);
    return `${date}T${pad(hh)}:${pad(mm)}:00${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  // Errors ------------------------------------------------------------------------------------

  function reason(err) {
    if (err instanceof Hub.ApiError) {
      if (err.status === 403) return t("only_managers");
      const detail = err.body && err.body.details && err.body.details[0];
      if (detail && err.body.error === "invalid request") return `${detail.field}: ${detail.error}`;
      if (err.body && err.body.error) return err.body.error;
    }
    return t("error_generic");
  }

  function show(id, text) {
    const node = $(id);
    node.textContent = text || "";
    node.hidden = !text;
  }

  // The list -----------------------------------------------------------------------------------

  async function loadList() {
    state.list = (await api("GET", "/api/broadcasts?limit=100")).broadcasts;
    renderList();
  }

  function renderList() {
    $("bc-empty").hidden = state.list.length > 0;
    $("bc-items").replaceChildren(...state.list.map(listItem));
  }

  function listItem(b) {
    const done = handled(b);
    const total = rowsOf(b);
    const item = el(
      "li",
      {
        class: "bc-item",
        "data-id": b.id,
        "data-status": b.status,
        "aria-current": state.current && state.current.id === b.id ? "true" : undefined,
      },
      el(
        "button",
        { type: "button", class: "bc-item-open", onclick: () => openBroadcast(b.id) },
        el("span", { class: "bc-item-top" },
          el("strong", { class: "bc-item-title" }, b.title),
          statusBadge(b.status)),
        el("span", { class: "bc-item-meta muted" }, whenLine(b)),
        b.status !== "draft" && bar(b, "bc-bar small"),
        b.status !== "draft" && el("span", { class: "bc-item-of muted" }, t("of_total", { done, total })),
      ),
    );
    return item;
  }

  function statusBadge(status) {
    return el("span", { class: `bc-status status-${status}`, "data-status": status }, t(`status_${status}`));
  }

  const rowsOf = (b) => Object.values(b.counts || {}).reduce((a, n) => a + n, 0);
  const handled = (b) => rowsOf(b) - (b.pending || 0);

  function whenLine(b) {
    if (b.finished_at) return t("finished_at", { when: when(b.finished_at) });
    if (b.status === "scheduled" || (b.status === "draft" && b.scheduled_at)) {
      return t("scheduled_for", { when: when(b.scheduled_at) });
    }
    if (b.started_at) return t("started_at", { when: when(b.started_at) });
    return t("created_at", { when: when(b.created_at) });
  }

  // A stacked bar: sent, failed, skipped, cancelled; what is left (pending) stays empty.
  function bar(b, className) {
    const total = rowsOf(b);
    const node = el("div", { class: className, role: "img" });
    for (const name of ["sent", "failed", "skipped", "cancelled"]) {
      const part = el("span", { class: `bc-bar-part ${name}` });
      part.style.width = total ? `${((b.counts[name] || 0) * 100) / total}%` : "0";
      node.append(part);
    }
    node.setAttribute("aria-label", t("of_total", { done: handled(b), total }));
    return node;
  }

  // One broadcast ------------------------------------------------------------------------------

  async function openBroadcast(id) {
    stopPolling();
    try {
      state.current = await api("GET", `/api/broadcasts/${id}`);
    } catch (err) {
      show("bc-error", reason(err));
      return;
    }
    history.replaceState(null, "", `?id=${id}`);
    showPanel("detail");
    renderDetail();
    renderList();
    await loadRecipients(true);
    schedulePoll();
  }

  function renderDetail() {
    const b = state.current;
    $("bc-d-title").textContent = b.title;
    $("bc-d-status").replaceWith(Object.assign(statusBadge(b.status), { id: "bc-d-status" }));
    $("bc-d-when").textContent = whenLine(b);
    const total = rowsOf(b);
    const parts = $("bc-d-bar").querySelectorAll(".bc-bar-part");
    parts.forEach((part) => {
      const name = [...part.classList].find((c) => c !== "bc-bar-part");
      part.style.width = total ? `${((b.counts[name] || 0) * 100) / total}%` : "0";
    });
    $("bc-d-bar").setAttribute("aria-label", t("of_total", { done: handled(b), total }));
    $("bc-d-of").textContent = b.status === "draft" ? "" : t("of_total", { done: handled(b), total });
    for (const dd of document.querySelectorAll("#bc-d-counts dd")) {
      const name = dd.dataset.count;
      dd.textContent = String(name === "pending" ? b.pending : b.counts[name] || 0);
    }
    const channels = Object.entries(b.channels || {});
    $("bc-d-channels-box").hidden = channels.length === 0;
    $("bc-d-channels").replaceChildren(
      ...channels.map(([channel, counts]) =>
        el("li", { "data-channel": channel || "none" },
          el("strong", {}, channel ? t(`channel_${channel}`) : t("not_routed")),
          " ",
          Object.entries(counts).map(([s, n]) => `${t(`row_${s}`)} ${n}`).join(" · "))),
    );
    $("bc-d-segment").textContent = segmentText(b.segment);
    $("bc-d-text").textContent = b.text;
    const open = b.status === "draft" || LIVE.includes(b.status);
    $("bc-d-send").hidden = b.status !== "draft";
    $("bc-d-send").textContent = b.scheduled_at ? t("schedule") : t("send");
    $("bc-d-edit").hidden = b.status !== "draft";
    $("bc-d-cancel").hidden = !open;
    if (!open) $("bc-d-confirm").hidden = true;
    $("bc-recipients-box").hidden = b.status === "draft";
  }

  function segmentText(segment) {
    const parts = [];
    if (segment.tags && segment.tags.length) parts.push(`${t("tags")}: ${segment.tags.join(", ")}`);
    if (segment.visited_after) parts.push(`${t("visited_after")} ${segment.visited_after}`);
    if (segment.visited_before) parts.push(`${t("visited_before")} ${segment.visited_before}`);
    if (segment.service_id) {
      const service = state.services.find((s) => s.id === segment.service_id);
      parts.push(`${t("service")}: ${service ? serviceName(service) : `#${segment.service_id}`}`);
    }
    if (segment.channel) parts.push(`${t("channel")}: ${t(`channel_${segment.channel}`)}`);
    return parts.length ? parts.join(" · ") : t("segment_everyone");
  }

  const serviceName = (s) => s.name[Hub.lang] || s.name.uk;

  async function loadRecipients(fresh) {
    const b = state.current;
    if (!b || b.status === "draft") return;
    const status = $("bc-r-status").value;
    // A refresh re-reads what is listed (at least a page); "more" reads the next page.
    const limit = fresh ? Math.max(PAGE, state.shown) : PAGE;
    const offset = fresh ? 0 : state.shown;
    const query = new URLSearchParams({ limit: String(Math.min(limit, 200)), offset: String(offset) });
    if (status) query.set("status", status);
    const found = await api("GET", `/api/broadcasts/${b.id}/recipients?${query}`);
    const rows = found.recipients.map(recipientRow);
    if (fresh) $("bc-recipients").replaceChildren(...rows);
    else $("bc-recipients").append(...rows);
    state.shown = (fresh ? 0 : state.shown) + found.recipients.length;
    $("bc-r-empty").hidden = state.shown > 0;
    $("bc-r-more").hidden = !found.more;
  }

  function recipientRow(r) {
    return el(
      "tr",
      { "data-client": r.client_id, "data-status": r.status },
      el("td", {}, r.name || t("no_name")),
      el("td", {}, r.channel ? t(`channel_${r.channel}`) : ""),
      el("td", {}, el("span", { class: `bc-row-status row-${r.status}` }, t(`row_${r.status}`))),
      el("td", { class: "bc-reason" }, r.last_error || ""),
      el("td", {}, when(r.sent_at)),
    );
  }

  // While a broadcast is scheduled or sending, its progress is read again every few seconds.
  function schedulePoll() {
    stopPolling();
    if (!state.current || !LIVE.includes(state.current.status)) return;
    state.poll = setTimeout(refresh, POLL_MS);
  }

  function stopPolling() {
    if (state.poll) clearTimeout(state.poll);
    state.poll = null;
  }

  async function refresh() {
    const id = state.current && state.current.id;
    if (!id) return;
    try {
      const fresh = await api("GET", `/api/broadcasts/${id}`);
      if (!state.current || state.current.id !== id) return; // another one was opened
      state.current = fresh;
      renderDetail();
      await Promise.all([loadRecipients(true), loadList()]);
      show("bc-error", "");
    } catch (err) {
      show("bc-error", reason(err));
    }
    schedulePoll();
  }

  async function act(path) {
    const b = state.current;
    show("bc-d-error", "");
    try {
      state.current = await api("POST", `/api/broadcasts/${b.id}/${path}`);
    } catch (err) {
      show("bc-d-error", reason(err));
      return;
    }
    $("bc-d-confirm").hidden = true;
    renderDetail();
    await Promise.all([loadRecipients(true), loadList()]);
    schedulePoll();
  }

  // The form ------------------------------------------------------------------------------------

  function showPanel(which) {
    $("bc-hint").hidden = which !== "hint";
    $("bc-form").hidden = which !== "form";
    $("bc-detail").hidden = which !== "detail";
  }

  function openForm(draft) {
    stopPolling();
    state.editing = draft || null;
    if (!draft) state.current = null;
    history.replaceState(null, "", location.pathname);
    const form = $("bc-form");
    form.reset();
    $("bc-template-lang").value = Hub.lang;
    fillTemplates();
    $("bc-form-heading").textContent = draft ? `${t("edit_draft")}: ${draft.title}` : t("new_broadcast");
    if (draft) {
      const s = draft.segment || {};
      $("bc-tags").value = (s.tags || []).join(", ");
      $("bc-visited-after").value = s.visited_after || "";
      $("bc-visited-before").value = s.visited_before || "";
      $("bc-service").value = s.service_id ? String(s.service_id) : "";
      $("bc-channel").value = s.channel || "";
      $("bc-title").value = draft.title;
      $("bc-text").value = draft.text;
      if (draft.scheduled_at) {
        form.elements.when.value = "later";
        $("bc-at").value = draft.scheduled_at.slice(0, 16);
      }
    }
    syncWhen();
    countText();
    show("bc-form-error", "");
    showPanel("form");
    renderList();
    preview();
    $("bc-title").focus();
  }

  function segmentOfForm() {
    const segment = {
      tags: $("bc-tags").value.split(",").map((s) => s.trim()).filter(Boolean),
    };
    if ($("bc-visited-after").value) segment.visited_after = $("bc-visited-after").value;
    if ($("bc-visited-before").value) segment.visited_before = $("bc-visited-before").value;
    if ($("bc-service").value) segment.service_id = Number($("bc-service").value);
    if ($("bc-channel").value) segment.channel = $("bc-channel").value;
    return segment;
  }

  // The count follows the filters as they change (the last answer asked wins).
  function preview() {
    clearTimeout(state.previewTimer);
    $("bc-count").textContent = t("recipients_counting");
    $("bc-count").dataset.count = "";
    state.previewTimer = setTimeout(async () => {
      const seq = ++state.previewSeq;
      try {
        const found = await api("POST", "/api/broadcasts/preview", { segment: segmentOfForm() });
        if (seq !== state.previewSeq) return;
        $("bc-count").textContent = t("recipients_count", { count: found.count });
        $("bc-count").dataset.count = String(found.count);
        const names = found.sample.map((n) => n || t("no_name"));
        $("bc-sample").textContent = names.length
          ? t("sample", { names: names.join(", ") + (found.count > names.length ? ", …" : "") })
          : "";
      } catch (err) {
        if (seq !== state.previewSeq) return;
        $("bc-count").textContent = reason(err);
        $("bc-sample").textContent = "";
      }
    }, PREVIEW_DELAY_MS);
  }

  function fillTemplates() {
    const lang = $("bc-template-lang").value;
    const options = state.templates
      .filter((tpl) => tpl.language === lang)
      .map((tpl) => el("option", { value: tpl.id }, tpl.title));
    $("bc-template").replaceChildren(el("option", { value: "" }, t("template_none")), ...options);
  }

  function pickTemplate() {
    const lang = $("bc-template-lang").value;
    const chosen = state.templates.find((tpl) => tpl.id === $("bc-template").value && tpl.language === lang);
    if (!chosen) return;
    const title = $("bc-title");
    // A title the staff typed themselves is kept; one from another template is replaced.
    const fromTemplate = state.templates.some((tpl) => tpl.title === title.value);
    if (!title.value || fromTemplate) title.value = chosen.title;
    $("bc-text").value = chosen.text;
    countText();
  }

  function countText() {
    $("bc-text-count").textContent = t("text_count", { n: $("bc-text").value.length, max: MAX_TEXT });
  }

  function syncWhen() {
    const later = $("bc-form").elements.when.value === "later";
    $("bc-at").disabled = !later;
    $("bc-send").textContent = later ? t("schedule") : t("send");
  }

  function bodyOfForm() {
    const title = $("bc-title").value.trim();
    const text = $("bc-text").value;
    if (!title) throw new Error(t("title_required"));
    if (!text.trim()) throw new Error(t("text_required"));
    const later = $("bc-form").elements.when.value === "later";
    if (later && !$("bc-at").value) throw new Error(t("time_required"));
    return {
      title,
      text,
      segment: segmentOfForm(),
      scheduled_at: later ? zonedIso($("bc-at").value, state.business.timezone) : null,
    };
  }

  // Save the draft (new or changed), then send it when asked: each step its own request, so a
  // refused send leaves a saved draft to fix, never a half-made broadcast.
  async function save(andSend) {
    show("bc-form-error", "");
    let body;
    try {
      body = bodyOfForm();
    } catch (err) {
      show("bc-form-error", err.message);
      return;
    }
    const buttons = [$("bc-send"), $("bc-save")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      let saved = state.editing
        ? await api("PATCH", `/api/broadcasts/${state.editing.id}`, body)
        : await api("POST", "/api/broadcasts", body);
      state.editing = saved;
      if (andSend) saved = await api("POST", `/api/broadcasts/${saved.id}/send`);
      state.editing = null;
      await loadList();
      await openBroadcast(saved.id);
    } catch (err) {
      show("bc-form-error", reason(err));
      if (state.editing) await loadList();
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // Start ---------------------------------------------------------------------------------------

  function wire() {
    $("bc-new").addEventListener("click", () => openForm(null));
    $("bc-form-close").addEventListener("click", () => {
      state.editing = null;
      showPanel("hint");
      renderList();
    });
    $("bc-form").addEventListener("submit", (event) => {
      event.preventDefault();
      save(true);
    });
    $("bc-save").addEventListener("click", () => save(false));
    for (const id of ["bc-tags", "bc-visited-after", "bc-visited-before", "bc-service", "bc-channel"]) {
      $(id).addEventListener("input", preview);
      $(id).addEventListener("change", preview);
    }
    $("bc-template-lang").addEventListener("change", fillTemplates);
    $("bc-template").addEventListener("change", pickTemplate);
    $("bc-text").addEventListener("input", countText);
    for (const radio of $("bc-form").elements.when) radio.addEventListener("change", syncWhen);
    $("bc-d-send").addEventListener("click", () => act("send"));
    $("bc-d-edit").addEventListener("click", () => openForm(state.current));
    $("bc-d-cancel").addEventListener("click", () => { $("bc-d-confirm").hidden = false; });
    $("bc-d-cancel-no").addEventListener("click", () => { $("bc-d-confirm").hidden = true; });
    $("bc-d-cancel-yes").addEventListener("click", () => act("cancel"));
    $("bc-r-status").addEventListener("change", () => loadRecipients(true));
    $("bc-r-more").addEventListener("click", () => loadRecipients(false));
  }

  async function start() {
    const root = $("bc");
    try {
      const me = await Hub.whoAmI();
      if (me.role === "master") {
        $("bc-forbidden").hidden = false;
        return;
      }
      const [business, services, templates] = await Promise.all([
        api("GET", "/api/business"),
        api("GET", "/api/services?all=1"),
        api("GET", "/api/broadcast-templates"),
      ]);
      state.business = business;
      state.services = services.services;
      state.templates = templates.templates;
      $("bc-service").append(
        ...state.services.map((s) => el("option", { value: s.id }, serviceName(s))),
      );
      $("bc-tz").textContent = t("salon_time", { tz: business.timezone });
      wire();
      showPanel("hint");
      $("bc-app").hidden = false;
      await loadList();
      // ?id= opens that broadcast, unless a new one was started while the list loaded.
      const wanted = Number(new URLSearchParams(location.search).get("id"));
      if (wanted && $("bc-form").hidden) await openBroadcast(wanted);
    } catch (err) {
      show("bc-error", reason(err));
    } finally {
      root.setAttribute("aria-busy", "false");
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
