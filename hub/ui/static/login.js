"use strict";

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const error = document.getElementById("login-error");
  error.hidden = true;
  try {
    await Hub.api("POST", "/api/auth/login", {
      email: form.email.value.trim(),
      password: form.password.value,
    });
    const next = new URLSearchParams(location.search).get("next") || "/inbox";
    location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/inbox";
  } catch (err) {
    error.textContent = err.status === 429 ? Hub.t("too_many_attempts") : Hub.t("wrong_login");
    error.hidden = false;
  }
});
