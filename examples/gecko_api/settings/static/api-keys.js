// The Settings > API Keys page: plain fetch calls to teamkey's management
// API, mounted for the signed-in person. No framework and no inline script
// (the Content-Security-Policy forbids inline ones), and no HTML from
// strings (it requires Trusted Types): text goes in as textContent.
//
// A full key, from a creation or a rotation, lives only in the reveal
// dialog's text and in one variable, until "Done", Escape or leaving the
// page clears both: it is never stored, logged, or put in a URL.
"use strict";

(() => {
  const root = document.getElementById("api-keys");
  if (!root) return;

  const byId = (id) => document.getElementById(id);
  const api = root.dataset.api; // the management routes' /api-keys
  const rowsUrl = root.dataset.rows; // the table body, rendered by the server
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const errorBox = byId("page-error");
  const statusBox = byId("page-status");
  const rows = byId("key-rows");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearMessages() {
    errorBox.textContent = "";
    errorBox.hidden = true;
    statusBox.textContent = "";
  }

  // A management call; resolves to the JSON answer (null for 204), or
  // throws an Error whose message is the API's own, for the page to show.
  async function call(method, url, body) {
    const init = {
      method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch {
      throw new Error("The server could not be reached. Check the connection and retry.");
    }
    if (response.ok) return response.status === 204 ? null : response.json();
    let message = `The server answered ${response.status} ${response.statusText}.`;
    try {
      const error = await response.json();
      if (error && typeof error.message === "string") {
        message = error.message;
        if (Array.isArray(error.refused_scopes)) message += ` (${error.refused_scopes.join(", ")})`;
      }
    } catch {
      // Not JSON: keep the status line.
    }
    throw new Error(message);
  }

  // Replaces the table body with the server's current one. Parsed by
  // XMLHttpRequest as an inert document (no script runs in it), then its
  // rows moved here: Trusted Types refuse HTML made from strings.
  function refreshRows() {
    return new Promise((resolve, reject) => {
      const failed = () => reject(new Error("The table could not be refreshed: reload the page."));
      const request = new XMLHttpRequest();
      request.open("GET", rowsUrl);
      request.responseType = "document";
      request.addEventListener("error", failed);
      request.addEventListener("load", () => {
        const body = request.status === 200 && request.response && request.response.getElementById("key-rows");
        if (!body) return failed();
        rows.replaceChildren(...body.childNodes);
        resolve();
      });
      request.send();
    });
  }

  function refreshOrSay() {
    return refreshRows().catch((error) => showError(error.message));
  }

  // The one-time reveal.
  const reveal = byId("reveal-dialog");
  const revealKey = byId("reveal-key");
  const copyStatus = byId("copy-status");
  let secret = null;

  function showKey(title, key) {
    byId("reveal-title").textContent = title;
    secret = key;
    revealKey.textContent = key;
    copyStatus.textContent = "";
    reveal.showModal();
  }

  function forgetKey() {
    secret = null;
    revealKey.textContent = "";
    copyStatus.textContent = "";
  }

  // Done, and leaving the page, clear the key at once: the dialog's
  // "close" event is queued, too late for a page going into the
  // back-forward cache.
  function hideKey() {
    forgetKey();
    reveal.close();
  }

  // Escape, or any other way out: the key leaves the page too.
  reveal.addEventListener("close", forgetKey);
  window.addEventListener("pagehide", hideKey);
  byId("reveal-done").addEventListener("click", hideKey);
  byId("copy-key").addEventListener("click", async () => {
    if (secret === null) return;
    try {
      await navigator.clipboard.writeText(secret);
      copyStatus.textContent = "Copied to the clipboard.";
    } catch {
      copyStatus.textContent = "Could not copy: select the key and copy it by hand.";
    }
  });

  // Create.
  const form = byId("create-form");
  if (form) {
    const submit = byId("create-submit");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const data = new FormData(form);
      const body = { name: String(data.get("name") || "").trim(), scopes: data.getAll("scopes") };
      const expiresIn = data.get("expires_in");
      if (expiresIn) body.expires_in = Number(expiresIn);
      submit.disabled = true;
      try {
        const created = await call("POST", api, body);
        form.reset();
        showKey(`Your new key “${created.name}”`, created.key);
        statusBox.textContent = `Created “${created.name}”.`;
        await refreshOrSay();
      } catch (error) {
        showError(error.message);
      } finally {
        submit.disabled = false;
      }
    });
  }

  // Rotate and delete: the row's button opens its dialog.
  const deleteDialog = byId("delete-dialog");
  const rotateDialog = byId("rotate-dialog");
  let target = null; // { id, name } of the row's key

  rows.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    clearMessages();
    target = { id: button.dataset.keyId, name: button.dataset.keyName };
    if (button.dataset.action === "delete") {
      byId("delete-name").textContent = target.name;
      deleteDialog.showModal();
    } else {
      byId("rotate-name").textContent = target.name;
      rotateDialog.showModal();
    }
  });

  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }

  byId("delete-confirm").addEventListener("click", async () => {
    const key = target;
    deleteDialog.close();
    if (!key) return;
    try {
      await call("DELETE", `${api}/${encodeURIComponent(key.id)}`);
      statusBox.textContent = `Deleted “${key.name}”: it is refused from now on.`;
    } catch (error) {
      showError(error.message);
    }
    await refreshOrSay();
  });

  byId("rotate-confirm").addEventListener("click", async () => {
    const key = target;
    const grace = rotateDialog.querySelector('input[name="grace"]:checked');
    rotateDialog.close();
    if (!key) return;
    try {
      const created = await call("POST", `${api}/${encodeURIComponent(key.id)}/rotate`, {
        grace_seconds: Number(grace ? grace.value : 0),
      });
      showKey(`New key for “${key.name}”`, created.key);
      statusBox.textContent = `Rotated “${key.name}”.`;
    } catch (error) {
      showError(error.message);
    }
    await refreshOrSay();
  });
})();
