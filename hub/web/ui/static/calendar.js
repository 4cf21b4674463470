// The calendar: a day or week per master in the salon's time zone, working hours shaded,
// appointments as blocks; book, move (drag or form), confirm, cancel, done, no-show through
// the JSON API (docs/api.md). Above the grid, the visits to settle (ended, still booked):
// each marked done or no-show in one click. A change a client makes through the bot arrives
// as a live `appointment` event and redraws both. Times are the salon's wall clock: the API answers with the
// salon's offset, so a time's date and hour are read straight from its ISO text.
"use strict";

(() => {
  const { api, el, t } = Hub;
  const $ = (id) => document.getElementById(id);
  const PX_PER_MIN = 1.2;
  const LIVE = ["booked", "confirmed"];
  const narrow = window.matchMedia("(max-width: 700px)");
  const touch = window.matchMedia("(pointer: coarse)");

  const state = {
    me: null,
    business: null,
    masters: [],
    services: [],
    date: "",
    view: "day",
    master: "all",
    showCancelled: false,
    appointments: [],
  };

  // Dates and times ------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  const hhmm = (minutes) => `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
  const minutesOf = (text) => Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5));
  const dateOf = (iso) => iso.slice(0, 10);
  const clockOf = (iso) => minutesOf(iso.slice(11, 16));
  const utcDay = (date) => new Date(`${date}T00:00:00Z`);
  const weekday = (date) => (utcDay(date).getUTCDay() + 6) % 7; // Monday is 0, as in the API

  function addDays(date, days) {
    const day = utcDay(date);
    day.setUTCDate(day.getUTCDate() + days);
    return day.toISOString().slice(0, 10);
  }

  function partsIn(tz, instant) {
    const format = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    return Object.fromEntries(format.formatToParts(instant).map((p) => [p.type, p.value]));
  }

  function todayIn(tz) {
    const p = partsIn(tz, new Date());
    return `${p.year}-${p.month}-${p.day}`;
  }

  function offsetAt(utcMs, tz) {
    const p = partsIn(tz, new Date(utcMs));
    const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
    return Math.round((wall - utcMs) / 60000);
  }

  // The salon's wall-clock time as ISO 8601 with its offset (the API wants an offset).
  function zonedIso(date, minutes, tz) {
    const [y, m, d] = date.split("-").map(Number);
    const wall = Date.UTC(y, m - 1, d, 0, minutes);
    const offset = offsetAt(wall - offsetAt(wall, tz) * 60000, tz);
    const sign = offset < 0 ? "-" : "+";
    const abs = Math.abs(offset);
    return `${date}T${hhmm(minutes)}:00${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  function dayLabel(date, options) {
    return new Intl.DateTimeFormat(Hub.lang, { timeZone: "UTC", ...options }).format(utcDay(date));
  }

  const shortDay = (date) => dayLabel(date, { weekday: "short", day: "numeric", month: "short" });
  const whenLabel = (iso) => `${shortDay(dateOf(iso))} · ${iso.slice(11, 16)}`;

  // An instant in any offset (a live event's UTC time) as the salon's wall clock.
  function instantLabel(iso) {
    const p = partsIn(state.business.timezone, new Date(iso));
    return `${shortDay(`${p.year}-${p.month}-${p.day}`)} · ${p.hour}:${p.minute}`;
  }

  // Data -----------------------------------------------------------------------------------

  const masterById = (id) => state.masters.find((m) => m.id === Number(id));
  const serviceById = (id) => state.services.find((s) => s.id === Number(id));
  const nameOf = (names) => (names && (names[Hub.lang] || names.en || names.uk)) || "";

  // A master sees only their own column; owners and admins see everyone.
  function visibleMasters() {
    if (state.me.role !== "master") return state.masters;
    const own = masterById(state.me.id);
    return [own || { id: state.me.id, name: state.me.name, hours: {}, services: [] }];
  }

  function servicesOf(master) {
    const own = new Map((master.services || []).map((s) => [s.service_id, s]));
    return state.services
      .filter((s) => own.has(s.id) || (s.master_ids || []).includes(master.id))
      .map((s) => ({ ...s, offer: own.get(s.id) }));
  }

  // The week view and a phone show one master: "all" falls back to the first one.
  function normalise() {
    const shown = visibleMasters();
    if (state.master !== "all" && !shown.some((m) => m.id === Number(state.master))) {
      state.master = "all";
    }
    if (state.master === "all" && (state.view === "week" || narrow.matches || shown.length < 2)) {
      state.master = shown.length ? shown[0].id : "all";
    }
  }

  function columns() {
    const shown = visibleMasters();
    if (!shown.length) return [];
    if (state.view === "week") {
      const monday = addDays(state.date, -weekday(state.date));
      const master = masterById(state.master) || shown[0];
      return [...Array(7).keys()].map((n) => ({ date: addDays(monday, n), master }));
    }
    if (state.master === "all") return shown.map((master) => ({ date: state.date, master }));
    return [{ date: state.date, master: masterById(state.master) || shown[0] }];
  }

  // Working time of one master on one date as [start, end] minute pairs, breaks left out.
  function workingSpans(master, date) {
    const day = (master.hours || {})[String(weekday(date))];
    if (!day) return [];
    const spans = [];
    let from = minutesOf(day.start);
    for (const [a, b] of (day.breaks || []).map(([x, y]) => [minutesOf(x), minutesOf(y)])) {
      if (a > from) spans.push([from, a]);
      from = Math.max(from, b);
    }
    const end = minutesOf(day.end);
    if (end > from) spans.push([from, end]);
    return spans;
  }

  async function loadAppointments(cols) {
    const query = new URLSearchParams({ from: cols[0].date, to: cols[cols.length - 1].date });
    const masters = new Set(cols.map((c) => c.master.id));
    if (masters.size === 1) query.set("master", [...masters][0]);
    const data = await api("GET", `/api/appointments?${query}`);
    state.appointments = data.appointments;
  }

  // The page ---------------------------------------------------------------------------------

  function readLocation() {
    const query = new URLSearchParams(location.search);
    const date = query.get("date");
    state.date = /^\d{4}-\d{2}-\d{2}$/.test(date || "") ? date : todayIn(state.business.timezone);
    state.view = query.get("view") === "week" ? "week" : "day";
    state.master = query.get("master") || "all";
    state.showCancelled = query.get("cancelled") === "1";
  }

  function writeLocation() {
    const query = new URLSearchParams(location.search);
    query.set("date", state.date);
    query.set("view", state.view);
    query.set("master", state.master);
    query.delete("client");
    if (state.showCancelled) query.set("cancelled", "1");
    else query.delete("cancelled");
    history.replaceState(null, "", `${location.pathname}?${query}`);
  }

  function showError(err) {
    const box = $("cal-error");
    box.textContent = (err && err.status === 403) ? t("forbidden") : t("error_generic");
    box.hidden = false;
  }

  async function refresh() {
    normalise();
    writeLocation();
    syncToolbar();
    const cols = columns();
    $("cal-grid").setAttribute("aria-busy", "true");
    try {
      if (cols.length) await loadAppointments(cols);
      $("cal-error").hidden = true;
    } catch (err) {
      showError(err);
      state.appointments = [];
    }
    renderGrid(cols);
  }

  function syncToolbar() {
    for (const button of document.querySelectorAll(".cal-views button")) {
      button.setAttribute("aria-pressed", String(button.dataset.view === state.view));
    }
    const picker = $("cal-master");
    const allowAll = state.view === "day" && !narrow.matches && visibleMasters().length > 1;
    picker.replaceChildren(
      allowAll ? el("option", { value: "all" }, t("all_masters")) : null,
      ...visibleMasters().map((m) => el("option", { value: m.id }, m.name)),
    );
    picker.value = String(state.master);
    $("cal-master-label").hidden = state.me.role === "master";
    $("cal-cancelled").checked = state.showCancelled;
    const master = masterById(state.master);
    $("cal-title").textContent = state.view === "week"
      ? `${master ? `${master.name} · ` : ""}${weekTitle()}`
      : dayLabel(state.date, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
  }

  function weekTitle() {
    const monday = addDays(state.date, -weekday(state.date));
    const sunday = addDays(monday, 6);
    return `${dayLabel(monday, { day: "numeric", month: "short" })} – ${dayLabel(sunday, { day: "numeric", month: "short", year: "numeric" })}`;
  }

  // The grid ---------------------------------------------------------------------------------

  function hoursRange(cols, shown) {
    let first = Infinity;
    let last = -Infinity;
    for (const col of cols) {
      for (const [a, b] of workingSpans(col.master, col.date)) {
        first = Math.min(first, a);
        last = Math.max(last, b);
      }
    }
    for (const a of shown) {
      first = Math.min(first, clockOf(a.start));
      last = Math.max(last, dateOf(a.end) === dateOf(a.start) ? clockOf(a.end) : 24 * 60);
    }
    if (first === Infinity) [first, last] = [9 * 60, 20 * 60];
    return [Math.floor(first / 60) * 60, Math.min(24 * 60, Math.ceil(last / 60) * 60)];
  }

  function inColumn(col) {
    return state.appointments.filter(
      (a) => a.master.id === col.master.id && dateOf(a.start) === col.date
        && (state.showCancelled || a.status !== "cancelled"),
    );
  }

  function renderGrid(cols) {
    const grid = $("cal-grid");
    if (!cols.length) {
      grid.replaceChildren(el("p", { class: "muted" }, t("no_masters")));
      grid.removeAttribute("aria-busy");
      return;
    }
    const shown = cols.flatMap(inColumn);
    const [first, last] = hoursRange(cols, shown);
    grid.style.setProperty("--cols", cols.length);
    grid.style.setProperty("--hour-px", `${60 * PX_PER_MIN}px`);
    grid.dataset.view = state.view;
    grid.replaceChildren(
      el("div", { class: "cal-corner" }),
      ...cols.map((col) => columnHead(col)),
      timeAxis(first, last),
      ...cols.map((col) => column(col, first, last)),
    );
    grid.removeAttribute("aria-busy");
  }

  function columnHead(col) {
    const today = col.date === todayIn(state.business.timezone);
    const label = state.view === "week" ? shortDay(col.date) : col.master.name;
    return el("div", { class: `cal-head${today && state.view === "week" ? " is-today" : ""}` }, label);
  }

  function timeAxis(first, last) {
    const axis = el("div", { class: "cal-axis" });
    axis.style.height = `${(last - first) * PX_PER_MIN}px`;
    for (let m = first; m < last; m += 60) {
      const label = el("span", { class: "cal-hour" }, hhmm(m));
      label.style.top = `${(m - first) * PX_PER_MIN}px`;
      axis.append(label);
    }
    return axis;
  }

  function place(node, from, to, first) {
    node.style.top = `${(from - first) * PX_PER_MIN}px`;
    node.style.height = `${Math.max(to - from, 10) * PX_PER_MIN}px`;
    return node;
  }

  function column(col, first, last) {
    const node = el("div", {
      class: "cal-col",
      "data-date": col.date,
      "data-master": col.master.id,
      "data-first": first,
    });
    node.style.height = `${(last - first) * PX_PER_MIN}px`;
    const spans = workingSpans(col.master, col.date);
    if (!spans.length) node.append(el("span", { class: "cal-dayoff" }, t("day_off")));
    for (const [a, b] of spans) {
      node.append(place(el("div", { class: "cal-free", title: t("free_click") }), a, b, first));
    }
    for (const [appointment, lane, lanes] of lanesOf(inColumn(col))) {
      node.append(block(appointment, first, lane, lanes));
    }
    node.addEventListener("click", (event) => clickFree(event, col, first));
    node.addEventListener("dragover", (event) => event.preventDefault());
    node.addEventListener("drop", (event) => dropOn(event, col, first));
    return node;
  }

  // Overlapping blocks (a cancelled one under a new booking) side by side.
  function lanesOf(list) {
    const sorted = [...list].sort((a, b) => a.start.localeCompare(b.start));
    const ends = [];
    const placed = sorted.map((a) => {
      let lane = ends.findIndex((end) => end <= a.start);
      if (lane < 0) lane = ends.push("") - 1;
      ends[lane] = a.end;
      return [a, lane];
    });
    return placed.map(([a, lane]) => [a, lane, ends.length]);
  }

  function block(a, first, lane, lanes) {
    const movable = LIVE.includes(a.status) && !touch.matches;
    const node = el(
      "button",
      {
        type: "button",
        class: `appt status-${a.status}`,
        "data-id": a.id,
        "data-start": a.start,
        "data-status": a.status,
        draggable: movable ? "true" : null,
        title: `${a.start.slice(11, 16)}–${a.end.slice(11, 16)} ${a.client.name || ""}`,
      },
      el("span", { class: "appt-time" }, `${a.start.slice(11, 16)}–${a.end.slice(11, 16)}`),
      el("strong", { class: "appt-client" }, a.client.name || a.client.phone || "—"),
      el("span", { class: "appt-service" }, nameOf(a.service.name)),
      el("span", { class: "appt-status" }, t(`status_${a.status}`)),
    );
    const end = dateOf(a.end) === dateOf(a.start) ? clockOf(a.end) : 24 * 60;
    place(node, clockOf(a.start), end, first);
    if (end - clockOf(a.start) < 50) node.classList.add("short");
    node.style.left = `${(lane * 100) / lanes}%`;
    node.style.width = `${100 / lanes}%`;
    node.addEventListener("click", (event) => {
      event.stopPropagation();
      openDetails(a);
    });
    node.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData("text/plain", String(a.id));
      event.dataTransfer.effectAllowed = "move";
      // Where in the block it was grabbed, so the block's top lands where it is dropped.
      state.dragging = { appointment: a, grab: event.clientY - node.getBoundingClientRect().top };
    });
    return node;
  }

  function minuteAt(event, columnNode, first, grab) {
    const y = event.clientY - columnNode.getBoundingClientRect().top - (grab || 0);
    const step = state.business.slot_step_min || 15;
    return first + Math.max(0, Math.round(y / PX_PER_MIN / step) * step);
  }

  function clickFree(event, col, first) {
    if (event.target.closest(".appt")) return;
    const step = state.business.slot_step_min || 15;
    const y = event.clientY - event.currentTarget.getBoundingClientRect().top;
    const minute = first + Math.floor(y / PX_PER_MIN / step) * step;
    openBooking({ master: col.master, date: col.date, minute });
  }

  async function dropOn(event, col, first) {
    event.preventDefault();
    const drag = state.dragging;
    state.dragging = null;
    if (!drag) return;
    const minute = minuteAt(event, event.currentTarget, first, drag.grab);
    const start = zonedIso(col.date, minute, state.business.timezone);
    await moveTo(drag.appointment, start, col.master.id, null);
  }

  // Dialogs ----------------------------------------------------------------------------------

  function openDialog(...content) {
    const dialog = $("cal-dialog");
    $("cal-dialog-body").replaceChildren(
      ...content,
      el("button", { type: "button", class: "secondary cal-close", onclick: closeDialog }, t("close")),
    );
    if (!dialog.open) dialog.showModal();
  }

  function closeDialog() {
    const dialog = $("cal-dialog");
    if (dialog.open) dialog.close();
  }

  function toast(text) {
    const note = el("p", { class: "cal-toast", role: "status" }, text);
    document.body.append(note);
    note.addEventListener("animationend", () => note.remove());
  }

  function field(label, control) {
    return el("label", { class: "cal-field" }, el("span", {}, label), control);
  }

  function reasonText(err) {
    const body = (err && err.body) || {};
    if (body.reason) return t("refused", { reason: t(`reason_${body.reason}`) });
    if (body.details) return body.details.map((d) => `${d.field}: ${d.error}`).join("; ");
    return body.error || t("error_generic");
  }

  // A refusal: the reason and the nearest free times, each a button that tries it.
  function showRefusal(box, err, tryAlternative) {
    const alternatives = (err.body && err.body.alternatives) || [];
    box.replaceChildren(el("p", { class: "error refusal", role: "alert" }, reasonText(err)));
    if (err.status !== 409) return;
    if (!alternatives.length) {
      box.append(el("p", { class: "muted" }, t("no_alternatives")));
      return;
    }
    box.append(
      el("p", {}, t("alternatives")),
      el("div", { class: "cal-alternatives" }, ...alternatives.map((alt) => el(
        "button",
        {
          type: "button",
          class: "secondary alt",
          "data-start": alt.start,
          "data-master": alt.master_id,
          onclick: () => tryAlternative(alt),
        },
        `${whenLabel(alt.start)}${masterLabel(alt.master_id)}`,
      ))),
    );
  }

  function masterLabel(id) {
    const master = masterById(id);
    return master ? ` · ${master.name}` : "";
  }

  // Booking ----------------------------------------------------------------------------------

  function openBooking({ master, date, minute, client }) {
    const shown = visibleMasters();
    const chosen = { client: client || null };
    const form = el("form", { id: "book-form", class: "cal-form", novalidate: true });
    const search = el("input", { id: "book-client-q", type: "search", autocomplete: "off", placeholder: t("client_search") });
    const results = el("div", { id: "book-client-results", class: "cal-results" });
    const picked = el("p", { id: "book-client-chosen", class: "cal-chosen", hidden: true });
    const masterSelect = el("select", { id: "book-master", name: "master" },
      ...shown.map((m) => el("option", { value: m.id }, m.name)));
    const serviceSelect = el("select", { id: "book-service", name: "service" });
    const dateInput = el("input", { id: "book-date", name: "date", type: "date", value: date || state.date });
    const timeSelect = el("select", { id: "book-time", name: "time" });
    const notes = el("textarea", { id: "book-notes", name: "notes", rows: 2, maxlength: 2000 });
    const problem = el("div", { id: "book-error", class: "cal-problem" });
    masterSelect.value = String((master || masterById(state.master) || shown[0] || {}).id);

    const showClient = () => {
      const has = Boolean(chosen.client);
      picked.hidden = !has;
      search.hidden = has;
      results.hidden = has;
      if (!has) return;
      picked.replaceChildren(
        el("strong", {}, chosen.client.name || chosen.client.phone || `#${chosen.client.id}`),
        " ",
        el("span", { class: "muted" }, chosen.client.phone || chosen.client.email || ""),
        " ",
        el("button", { type: "button", class: "link", onclick: () => { chosen.client = null; showClient(); search.focus(); } }, t("client_change")),
      );
    };
    const pickClient = (card) => { chosen.client = card; showClient(); };
    search.addEventListener("input", debounce(() => findClients(search.value, results, pickClient), 250));

    const loadServices = () => {
      const m = masterById(masterSelect.value) || { id: Number(masterSelect.value), services: [] };
      serviceSelect.replaceChildren(
        el("option", { value: "" }, "—"),
        ...servicesOf(m).map((s) => el("option", { value: s.id }, serviceLabel(s))),
      );
    };
    const loadTimes = () => fillSlots(timeSelect, {
      service: serviceSelect.value, master: masterSelect.value, date: dateInput.value, minute,
    });
    masterSelect.addEventListener("change", () => { loadServices(); loadTimes(); });
    serviceSelect.addEventListener("change", loadTimes);
    dateInput.addEventListener("change", () => { minute = undefined; loadTimes(); });

    const send = async (start, masterId) => {
      if (!chosen.client) return problem.replaceChildren(el("p", { class: "error" }, t("client_required")));
      if (!serviceSelect.value) return problem.replaceChildren(el("p", { class: "error" }, t("service_required")));
      if (!start) return problem.replaceChildren(el("p", { class: "error" }, t("time_required")));
      problem.replaceChildren();
      try {
        const made = await api("POST", "/api/appointments", {
          client_id: chosen.client.id,
          service_id: Number(serviceSelect.value),
          master_id: Number(masterId),
          start,
          notes: notes.value.trim(),
        });
        closeDialog();
        toast(t("booked_ok"));
        await showAppointment(made);
      } catch (err) {
        showRefusal(problem, err, (alt) => send(alt.start, alt.master_id));
        if (err.status === 409) {
          // What took the time shows behind the form, and the form offers only free times.
          loadTimes();
          refresh();
        }
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send(timeSelect.value, masterSelect.value);
    });

    form.append(
      el("h2", {}, t("book_title")),
      field(t("client"), el("div", {}, search, results, picked)),
      field(t("master"), masterSelect),
      field(t("service"), serviceSelect),
      el("div", { class: "cal-row" }, field(t("date"), dateInput), field(t("time"), timeSelect)),
      field(t("notes"), notes),
      problem,
      el("button", { type: "submit", id: "book-submit" }, t("submit_book")),
    );
    if (state.me.role === "master") masterSelect.disabled = true;
    loadServices();
    loadTimes();
    showClient();
    openDialog(form);
    if (!chosen.client) search.focus();
  }

  function serviceLabel(service) {
    const duration = service.offer ? service.offer.duration_min : service.duration_min;
    const price = service.offer ? service.offer.price : service.price;
    return `${nameOf(service.name)} · ${t("minutes", { n: duration })} · ${price.amount} ${price.currency}`;
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  async function findClients(text, results, pick) {
    const q = text.trim();
    if (q.length < 2) return results.replaceChildren();
    try {
      const data = await api("GET", `/api/clients?${new URLSearchParams({ q, limit: 8 })}`);
      const cards = data.clients || data.items || [];
      results.replaceChildren(
        ...(cards.length ? cards.map((card) => el(
          "button",
          { type: "button", class: "client-option", "data-id": card.id, onclick: () => pick(card) },
          el("strong", {}, card.name || "—"), " ",
          el("span", { class: "muted" }, card.phone || card.email || ""),
        )) : [el("p", { class: "muted" }, t("client_none"))]),
      );
    } catch (err) {
      results.replaceChildren(el("p", { class: "error" }, reasonText(err)));
    }
  }

  // Free starts for one service, master and day; the one at or after `minute` is chosen.
  async function fillSlots(select, { service, master, date, minute }) {
    select.replaceChildren();
    select.dataset.loaded = "false";
    if (!service || !master || !date) {
      select.dataset.loaded = "true";
      return;
    }
    try {
      const query = new URLSearchParams({ service, master, from: date, to: date });
      const data = await api("GET", `/api/slots?${query}`);
      const options = data.slots.map((s) => el("option", { value: s.start, "data-master": s.master_id }, s.start.slice(11, 16)));
      select.replaceChildren(...(options.length ? options : [el("option", { value: "" }, t("no_slots"))]));
      const wanted = minute === undefined ? null : data.slots.find((s) => clockOf(s.start) >= minute);
      if (wanted) select.value = wanted.start;
    } catch (err) {
      select.replaceChildren(el("option", { value: "" }, reasonText(err)));
    }
    select.dataset.loaded = "true";
  }

  // Show a booked or moved appointment: go to its day and mark it.
  async function showAppointment(appointment) {
    state.date = dateOf(appointment.start);
    if (state.master !== "all" && Number(state.master) !== appointment.master.id) {
      state.master = state.view === "day" && !narrow.matches ? "all" : appointment.master.id;
    }
    await refresh();
    const node = document.querySelector(`.appt[data-id="${appointment.id}"]`);
    if (node) {
      node.classList.add("is-new");
      node.scrollIntoView({ block: "nearest" });
    }
  }

  // Visits to settle --------------------------------------------------------------------------

  async function loadUnsettled() {
    const box = $("cal-settle");
    let data;
    try {
      data = await api("GET", "/api/appointments/unsettled");
    } catch (err) {
      return; // the grid shows errors; this list simply stays as it was
    }
    $("cal-settle-count").textContent = String(data.count);
    $("cal-settle-list").replaceChildren(...data.appointments.map(settleItem));
    box.hidden = data.count === 0;
    box.dataset.count = String(data.count);
  }

  function settleItem(a) {
    const problem = el("div", { class: "cal-problem" });
    const mark = async (action) => {
      try {
        await api("PATCH", `/api/appointments/${a.id}`, { action });
      } catch (err) {
        problem.replaceChildren(el("p", { class: "error", role: "alert" }, reasonText(err)));
        return;
      }
      toast(t("settle_ok"));
      await Promise.all([loadUnsettled(), refresh()]);
    };
    return el("li", { class: "cal-settle-item", "data-id": a.id },
      el("span", { class: "what" },
        el("strong", {}, a.client.name || a.client.phone || "—"),
        ` · ${whenLabel(a.start)} · ${nameOf(a.service.name)} · ${a.master.name || ""}`),
      el("button", { type: "button", class: "settle-done", onclick: () => mark("done") }, t("action_done")),
      el("button", { type: "button", class: "secondary settle-no-show", onclick: () => mark("no_show") }, t("action_no_show")),
      problem,
    );
  }

  // A client changed an appointment through the bot: show it, and what is left to settle.
  function liveUpdates() {
    const source = Hub.listen({
      appointment: (change) => {
        if (change.status === "cancelled" && change.by === "client" && change.start) {
          toast(t("client_cancelled", { client: change.client_name || "", when: instantLabel(change.start) }));
        }
        if (!$("cal-dialog").open) refresh();
        loadUnsettled();
      },
    });
    // body[data-live] says whether live updates flow (tests wait for it too).
    source.addEventListener("open", () => { document.body.dataset.live = "on"; });
    source.addEventListener("error", () => { document.body.dataset.live = "off"; });
  }

  // One appointment: details and what can be done with it -----------------------------------

  function detailRow(label, value) {
    return value ? [el("dt", {}, label), el("dd", {}, value)] : [];
  }

  function openDetails(a) {
    const problem = el("div", { id: "appt-error", class: "cal-problem" });
    const started = new Date(a.start) <= new Date();
    const can = {
      confirm: a.status === "booked",
      done: started && ["booked", "confirmed", "no_show"].includes(a.status),
      no_show: started && ["booked", "confirmed", "done"].includes(a.status),
      move: LIVE.includes(a.status),
      cancel: LIVE.includes(a.status),
    };
    const act = (action, extra) => change(a, { action, ...(extra || {}) }, problem);
    const cancelBox = el("div", { id: "appt-cancel", class: "cal-subform", hidden: true },
      field(t("cancel_reason"), el("input", { id: "appt-cancel-reason", maxlength: 500 })),
      el("button", {
        type: "button", id: "appt-cancel-submit", class: "danger",
        onclick: () => act("cancel", { reason: $("appt-cancel-reason").value.trim() }),
      }, t("cancel_submit")),
    );
    openDialog(el("div", { id: "appt-details", class: "cal-details", "data-id": a.id },
      el("h2", {}, a.client.name || a.client.phone || "—"),
      el("dl", {},
        ...detailRow(t("when"), `${whenLabel(a.start)}–${a.end.slice(11, 16)}`),
        ...detailRow(t("service"), nameOf(a.service.name)),
        ...detailRow(t("master"), a.master.name),
        ...detailRow(t("status"), t(`status_${a.status}`)),
        ...detailRow(t("price"), a.price ? `${a.price.amount} ${a.price.currency}` : ""),
        ...detailRow(t("phone"), a.client.phone),
        ...detailRow(t("notes"), a.notes),
      ),
      el("div", { class: "cal-actions" },
        can.confirm && el("button", { type: "button", id: "appt-confirm", onclick: () => act("confirm") }, t("action_confirm")),
        can.done && el("button", { type: "button", id: "appt-done", onclick: () => act("done") }, t("action_done")),
        can.no_show && el("button", { type: "button", id: "appt-no-show", class: "secondary", onclick: () => act("no_show") }, t("action_no_show")),
        can.move && el("button", { type: "button", id: "appt-move", class: "secondary", onclick: () => openMove(a) }, t("action_move")),
        can.cancel && el("button", {
          type: "button", id: "appt-cancel-open", class: "secondary",
          onclick: () => { cancelBox.hidden = false; $("appt-cancel-reason").focus(); },
        }, t("action_cancel")),
      ),
      cancelBox,
      problem,
    ));
  }

  async function change(a, body, problem) {
    try {
      const changed = await api("PATCH", `/api/appointments/${a.id}`, body);
      closeDialog();
      toast(body.action === "move" ? t("moved_ok") : t("changed_ok"));
      if (["done", "no_show", "cancel"].includes(body.action)) loadUnsettled();
      await showAppointment(changed);
    } catch (err) {
      showRefusal(problem, err, (alt) => change(a, { action: "move", start: alt.start, master_id: alt.master_id }, problem));
      if (err.status === 409) refresh();
    }
  }

  // Moving by drag: a refusal opens the details with the reason and the alternatives.
  async function moveTo(a, start, masterId) {
    const problem = el("div", { id: "appt-error", class: "cal-problem" });
    try {
      const moved = await api("PATCH", `/api/appointments/${a.id}`, { action: "move", start, master_id: masterId });
      toast(t("moved_ok"));
      await showAppointment(moved);
    } catch (err) {
      openDialog(el("h2", {}, t("move_title")), problem);
      showRefusal(problem, err, (alt) => change(a, { action: "move", start: alt.start, master_id: alt.master_id }, problem));
    }
  }

  // Moving by form (touch screens, keyboards and tests): a new day, master and free time.
  function openMove(a) {
    const shown = visibleMasters().filter((m) => servicesOf(m).some((s) => s.id === a.service.id));
    const form = el("form", { id: "move-form", class: "cal-form", novalidate: true });
    const dateInput = el("input", { id: "move-date", type: "date", value: dateOf(a.start) });
    const masterSelect = el("select", { id: "move-master" },
      ...(shown.length ? shown : [a.master]).map((m) => el("option", { value: m.id }, m.name)));
    masterSelect.value = String(a.master.id);
    if (state.me.role === "master") masterSelect.disabled = true;
    const timeSelect = el("select", { id: "move-time" });
    const problem = el("div", { id: "move-error", class: "cal-problem" });
    const loadTimes = () => fillSlots(timeSelect, {
      service: a.service.id, master: masterSelect.value, date: dateInput.value, minute: clockOf(a.start),
    });
    dateInput.addEventListener("change", loadTimes);
    masterSelect.addEventListener("change", loadTimes);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!timeSelect.value) return problem.replaceChildren(el("p", { class: "error" }, t("time_required")));
      change(a, { action: "move", start: timeSelect.value, master_id: Number(masterSelect.value) }, problem);
    });
    form.append(
      el("h2", {}, t("move_title")),
      el("p", { class: "muted" }, `${a.client.name || ""} · ${nameOf(a.service.name)} · ${whenLabel(a.start)}`),
      el("div", { class: "cal-row" }, field(t("date"), dateInput), field(t("time"), timeSelect)),
      field(t("master"), masterSelect),
      problem,
      el("button", { type: "submit", id: "move-submit" }, t("submit_move")),
    );
    openDialog(form);
    loadTimes();
  }

  // Start ------------------------------------------------------------------------------------

  function step(direction) {
    state.date = direction === 0
      ? todayIn(state.business.timezone)
      : addDays(state.date, direction * (state.view === "week" ? 7 : 1));
    refresh();
  }

  function wire() {
    $("cal-prev").addEventListener("click", () => step(-1));
    $("cal-next").addEventListener("click", () => step(1));
    $("cal-today").addEventListener("click", () => step(0));
    for (const button of document.querySelectorAll(".cal-views button")) {
      button.addEventListener("click", () => {
        state.view = button.dataset.view;
        refresh();
      });
    }
    $("cal-master").addEventListener("change", (event) => {
      state.master = event.target.value;
      refresh();
    });
    $("cal-cancelled").addEventListener("change", (event) => {
      state.showCancelled = event.target.checked;
      refresh();
    });
    $("cal-book").addEventListener("click", () => openBooking({ master: masterById(state.master), date: state.date }));
    narrow.addEventListener("change", refresh);
    // Others book too (the bot, other staff): coming back to the tab shows their changes.
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      if (!$("cal-dialog").open) refresh();
      loadUnsettled();
    });
  }

  async function openClientFromLink() {
    const id = new URLSearchParams(location.search).get("client");
    if (!/^\d+$/.test(id || "")) return;
    try {
      const card = await api("GET", `/api/clients/${id}`);
      openBooking({ date: state.date, client: card });
    } catch (err) {
      showError(err);
    }
  }

  async function start() {
    try {
      state.me = await Hub.whoAmI();
      const [business, masters, services] = await Promise.all([
        api("GET", "/api/business"),
        api("GET", "/api/masters"),
        api("GET", "/api/services"),
      ]);
      state.business = business;
      state.masters = masters.masters;
      state.services = services.services;
    } catch (err) {
      showError(err);
      return;
    }
    readLocation();
    wire();
    liveUpdates();
    await Promise.all([refresh(), loadUnsettled()]);
    await openClientFromLink();
    document.body.dataset.ready = "true";
  }

  start();
})();
