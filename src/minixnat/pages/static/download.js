// The download page without a server round trip: counts follow the ticked sessions, and
// "All"/"None" tick whole groups.  Everything also works without this script: the
// "Update counts" button asks the server for the same numbers (pages/choices.py: tally).
"use strict";

function recount(form, sessions) {
  const chosen = new Set(
    Array.from(form.querySelectorAll('input[name="pick"]:checked'), (box) => box.value)
  );
  const counts = new Map();
  const bump = (kind, value) => {
    const key = kind + ":" + value;
    counts.set(key, (counts.get(key) || 0) + 1);
  };
  for (const s of sessions) {
    if (!chosen.has(s.id)) continue;
    for (const scan of s.scans) {
      bump("type", scan.type);
      for (const f of new Set(scan.formats)) bump("format", f);
    }
    for (const r of new Set(s.resources)) bump("resource", r);
    for (const a of s.assessors) bump("assessor", a);
    for (const r of s.recons) bump("recon", r);
  }
  for (const span of form.querySelectorAll("[data-count]")) {
    span.textContent = "(" + (counts.get(span.dataset.count) || 0) + ")";
  }
  const live = document.getElementById("live-counts");
  if (live) live.textContent = chosen.size + " of " + sessions.length + " sessions ticked.";
}

function setupDownloadPage(form) {
  const sessions = JSON.parse(document.getElementById("choices").textContent);
  for (const el of form.querySelectorAll(".bulk")) el.hidden = false;
  for (const el of form.querySelectorAll(".nojs")) el.hidden = true;
  form.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-all], button[data-none]");
    if (!button) return;
    const name = button.dataset.all || button.dataset.none;
    for (const box of form.querySelectorAll('input[type="checkbox"][name="' + name + '"]')) {
      box.checked = Boolean(button.dataset.all);
    }
    if (name === "pick") recount(form, sessions);
  });
  form.addEventListener("change", (event) => {
    if (event.target.name === "pick") recount(form, sessions);
  });
}

function setupCopy(button) {
  const command = document.getElementById("command");
  const status = document.getElementById("copy-status");
  if (!navigator.clipboard || !command) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(command.textContent);
      status.textContent = "Copied.";
    } catch (err) {
      status.textContent = "Could not copy: select the command and copy it by hand.";
    }
  });
}

const downloadForm = document.getElementById("download-form");
if (downloadForm) setupDownloadPage(downloadForm);
const copyButton = document.getElementById("copy");
if (copyButton) setupCopy(copyButton);
