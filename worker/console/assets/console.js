// The console's only script: inlined into the page under its CSP nonce. It replays the
// selected failures (POST with the page's anti-forgery token in a header) and reloads the page
// while a replay's outcome is awaited.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="console-csrf"]').content;
  const form = document.getElementById("failures");
  if (!form) return;
  const button = document.getElementById("replay");
  const status = document.getElementById("replay-status");
  const selected = () =>
    Array.from(form.querySelectorAll('input[name="ref"]:checked'), (box) => box.value);
  const update = () => {
    const count = selected().length;
    button.disabled = count === 0;
    button.textContent = count > 1 ? `Replay ${count} selected` : "Replay selected";
  };
  const say = (text, bad) => {
    status.textContent = text;
    status.classList.toggle("bad", Boolean(bad));
  };
  form.addEventListener("change", update);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const refs = selected();
    if (refs.length === 0) return;
    button.disabled = true;
    say(`replaying ${refs.length}…`);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Console-Csrf": csrf },
        body: JSON.stringify({ refs }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        say(body.error || `the replay failed: ${response.status}`, true);
        update();
        return;
      }
      const skipped = body.skipped.map((s) => `${s.ref}: ${s.reason}`);
      say(
        `replayed ${body.replayed.length}` +
          (skipped.length ? `; skipped ${skipped.join("; ")}` : "") +
          "; following its outcome…",
      );
      setTimeout(() => window.location.reload(), 1000);
    } catch (error) {
      say(`the replay failed: ${error}`, true);
      update();
    }
  });
  update();
  // While a replay's outcome is awaited, reload every 3 s (unless failures are being selected).
  if (document.body.dataset.pending === "yes") {
    setInterval(() => {
      if (selected().length === 0) window.location.reload();
    }, 3000);
  }
})();
