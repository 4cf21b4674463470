"use strict";

// Where to go after signing in: a path of this site only. The address is parsed the way the
// browser will parse it when it navigates (a backslash is a slash, tabs and newlines vanish),
// so "/\evil.example/" or "/%09/evil.example/" are seen for the other sites they are.
function sameSitePath(next) {
  if (!next) return "/inbox";
  try {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin) return url.pathname + url.search + url.hash;
  } catch (_) {
    // not an address at all
  }
  return "/inbox";
}

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
    location.href = sameSitePath(new URLSearchParams(location.search).get("next"));
  } catch (err) {
    error.textContent = err.status === 429 ? Hub.t("too_many_attempts") : Hub.t("wrong_login");
    error.hidden = false;
  }
});
