// Every page: the "Uploads" indicator in the header follows running imports; the tracker
// page keeps watching (more often while one runs) and updates its table in place.  The upload form sends its file with a progress bar.
// Without this script everything still works: the indicator is right when the page is
// drawn, and the upload form posts normally and lands on the import's own page.
"use strict";

const POLL_MS = 1500; // while an import runs
const IDLE_MS = 3000; // the tracker page, waiting for imports started elsewhere

function cell(row, text, href) {
  const el = document.createElement(href ? "th" : "td");
  if (href) {
    el.scope = "row";
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    el.appendChild(a);
  } else {
    el.textContent = text;
  }
  row.appendChild(el);
  return el;
}

function linksCell(row, links) {
  const td = cell(row, "");
  links.forEach((link, i) => {
    if (i) td.appendChild(document.createElement("br"));
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    td.appendChild(a);
  });
}

function showActivities(data) {
  const indicator = document.getElementById("activity-indicator");
  if (indicator) {
    indicator.dataset.running = String(data.running);
    indicator.textContent = "Uploads";
    if (data.running) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = data.running + " running";
      indicator.append(" ", badge);
    }
  }
  const empty = document.getElementById("activity-empty");
  if (empty) empty.hidden = data.activities.length > 0;
  const table = document.querySelector("#activity-table tbody");
  if (table) {
    table.replaceChildren();
    for (const a of data.activities) {
      const row = document.createElement("tr");
      row.id = "activity-" + a.activity;
      row.dataset.state = a.state;
      cell(row, a.started);
      cell(row, a.filename || "(no name)", "/app/activity/" + a.activity);
      cell(row, a.project);
      cell(row, a.destination);
      cell(row, a.summary).className = "state";
      linksCell(row, a.links);
      table.appendChild(row);
    }
  }
  const one = document.getElementById("activity-one");
  if (one) {
    const mine = data.activities.find((a) => String(a.activity) === one.dataset.activity);
    if (mine && mine.state !== one.dataset.state) window.location.reload();
  }
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    for (;;) {
      const answer = await fetch("/app/activity?format=json", { headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      const data = await answer.json();
      showActivities(data);
      const watching = document.getElementById("activity-table");
      if (!data.running && !watching) return;
      await new Promise((resolve) => setTimeout(resolve, data.running ? POLL_MS : IDLE_MS));
    }
  } finally {
    polling = false;
  }
}

function setupUpload(form) {
  const bar = document.getElementById("upload-bar");
  const box = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const result = document.getElementById("upload-result");
  const button = document.getElementById("begin");
  form.addEventListener("submit", (event) => {
    if (!form.reportValidity()) return;
    event.preventDefault();
    const file = form.elements.file.files[0];
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.floor((100 * e.loaded) / e.total);
      bar.value = percent;
      status.textContent = "Uploading " + file.name + ": " + percent + "%";
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = 100;
      status.textContent = "Uploaded " + file.name + "; importing…";
      poll();
    });
    xhr.addEventListener("load", () => {
      button.disabled = false;
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (err) {
        status.textContent = "The server answered " + xhr.status + " without a result.";
        return;
      }
      status.textContent = data.ok ? "Import " + data.summary + "." : "Not imported: " + data.message;
      result.replaceChildren();
      for (const link of data.links || []) {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.className = "button secondary";
        a.href = link.href;
        a.textContent = "Open " + link.text;
        li.appendChild(a);
        result.appendChild(li);
      }
      poll();
    });
    xhr.addEventListener("error", () => {
      button.disabled = false;
      status.textContent = "The upload was cut off: check the connection and begin again.";
      poll();
    });
    button.disabled = true;
    box.hidden = false;
    bar.value = 0;
    result.replaceChildren();
    xhr.send(new FormData(form));
    setTimeout(poll, 300);
  });
}

const uploadForm = document.getElementById("upload-form");
if (uploadForm) setupUpload(uploadForm);
const indicator = document.getElementById("activity-indicator");
if ((indicator && indicator.dataset.running !== "0") || document.getElementById("activity-table")) {
  poll();
}
