// Canned replies managed from the inbox (owner/admin): a dialog that lists them with add, edit
// and delete. After each change the list is read back from the API and the reply box's picker
// (#canned, filled by inbox-thread.js from Inbox.state.canned) offers it without a reload.
// Masters never see the button (body[data-role=master] .admin-only); the API refuses them too.
"use strict";

const InboxCanned = (() => {
  const { byId, reason, showError } = Inbox;
  const el = Hub.el;
  let editing = null; // the canned reply in the form, or null for a new one

  const form = () => byId("canned-form");

  async function reload() {
    const list = await Hub.api("GET", "/api/canned");
    Inbox.state.canned = Array.isArray(list) ? list : [];
    render();
    InboxThread.fillCanned(); // the reply box offers the new list at once
  }

  function render() {
    const canned = Inbox.state.canned;
    byId("canned-empty").hidden = canned.length > 0;
    byId("canned-list").replaceChildren(...canned.map(row));
  }

  function row(canned) {
    const item = el(
      "li",
      { class: "canned-item", "data-id": canned.id },
      el(
        "div",
        { class: "canned-top" },
        el("strong", { class: "canned-name" }, canned.title),
        canned.language && el("span", { class: "badge canned-lang" }, canned.language),
      ),
      el("p", { class: "canned-text" }, canned.text),
    );
    const button = (name, label, onclick) =>
      el("button", { type: "button", class: `secondary ${name}`, onclick }, Hub.t(label));
    item.append(
      el(
        "div",
        { class: "canned-actions" },
        button("canned-edit", "edit", () => edit(canned)),
        button("canned-delete", "delete", () => askDelete(item, canned)),
      ),
    );
    return item;
  }

  // Deleting asks once more, in the row itself (no browser pop-up).
  function askDelete(item, canned) {
    if (item.querySelector(".canned-confirm")) return;
    const confirm = el(
      "div",
      { class: "canned-confirm" },
      el("p", {}, Hub.t("canned_delete_question", { title: canned.title })),
      el(
        "button",
        { type: "button", class: "canned-yes", onclick: () => remove(canned) },
        Hub.t("delete"),
      ),
      el(
        "button",
        { type: "button", class: "secondary canned-no", onclick: () => confirm.remove() },
        Hub.t("cancel"),
      ),
    );
    item.append(confirm);
  }

  async function remove(canned) {
    showError(byId("canned-error"), "");
    try {
      await Hub.api("DELETE", `/api/canned/${canned.id}`);
      if (editing && editing.id === canned.id) resetForm();
      await reload();
    } catch (err) {
      showError(byId("canned-error"), Hub.t("error_action", { reason: reason(err) }));
    }
  }

  function edit(canned) {
    editing = canned;
    const f = form();
    f.elements.title.value = canned.title;
    f.elements.text.value = canned.text;
    f.elements.language.value = canned.language || "";
    byId("canned-form-title").textContent = Hub.t("canned_edit");
    byId("canned-save").textContent = Hub.t("save");
    byId("canned-cancel").hidden = false;
    byId("canned-saved").hidden = true;
    f.elements.title.focus();
  }

  function resetForm() {
    editing = null;
    form().reset();
    byId("canned-form-title").textContent = Hub.t("canned_new");
    byId("canned-save").textContent = Hub.t("canned_add");
    byId("canned-cancel").hidden = true;
  }

  async function save(event) {
    event.preventDefault();
    const f = form();
    const body = {
      title: f.elements.title.value.trim(),
      text: f.elements.text.value.trim(),
      language: f.elements.language.value || null,
    };
    showError(byId("canned-error"), "");
    byId("canned-saved").hidden = true;
    byId("canned-save").disabled = true;
    try {
      if (editing) await Hub.api("PATCH", `/api/canned/${editing.id}`, body);
      else await Hub.api("POST", "/api/canned", body);
      resetForm();
      byId("canned-saved").hidden = false;
      await reload();
    } catch (err) {
      showError(byId("canned-error"), Hub.t("error_save", { reason: reason(err) }));
    } finally {
      byId("canned-save").disabled = false;
    }
  }

  async function openDialog() {
    resetForm();
    byId("canned-saved").hidden = true;
    showError(byId("canned-error"), "");
    render();
    byId("canned-dialog").showModal();
    try {
      await reload(); // another admin may have changed them meanwhile
    } catch (err) {
      showError(byId("canned-error"), Hub.t("error_load"));
    }
  }

  function init() {
    byId("canned-manage").addEventListener("click", openDialog);
    byId("canned-close").addEventListener("click", () => byId("canned-dialog").close());
    byId("canned-cancel").addEventListener("click", resetForm);
    form().addEventListener("submit", save);
  }

  document.addEventListener("DOMContentLoaded", init);

  return { reload };
})();
