// Keeps the page current without a full reload: every element with data-refresh="URL" has its content
// replaced, every two seconds, by the HTML fragment the server renders at URL (already escaped there).
// Paused while the tab is hidden; a failed fetch is shown on the page and retried on the next tick.
"use strict";

(function () {
  const INTERVAL_MS = 2000;

  function note(text) {
    const state = document.getElementById("refresh-state");
    if (state) {
      state.textContent = text;
    }
  }

  async function refresh(element) {
    const response = await fetch(element.dataset.refresh, {
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (!response.ok) {
      throw new Error("HTTP " + response.status);
    }
    element.innerHTML = await response.text();
  }

  async function tick() {
    if (document.hidden) {
      return;
    }
    const elements = document.querySelectorAll("[data-refresh]");
    try {
      await Promise.all(Array.from(elements, refresh));
      note("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      note("cannot reach the controller (" + error.message + "); retrying");
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    window.setInterval(tick, INTERVAL_MS);
  });
})();
