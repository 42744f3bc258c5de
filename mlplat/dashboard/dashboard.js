// The dashboard's one script.
// 1. Live updates: every `refresh-seconds` it fetches the page's parts as JSON and replaces the sections
//    whose HTML changed (the page itself is never reloaded; a section being edited is left alone). Setting
//    `data-live-paused` on <body> holds the sections as they are (a reader copying figures, a browser test).
// 2. Sends delayed labels as JSON, with the session's CSRF token in a header. The server refuses a
//    state-changing request without that token (403), whatever its origin.
"use strict";

function meta(name) {
  var node = document.querySelector("meta[name='" + name + "']");
  return node ? node.getAttribute("content") : null;
}

function startLiveUpdates() {
  var seconds = Number(meta("refresh-seconds") || 0);
  var url = meta("parts-url");
  if (!url || !(seconds > 0)) return;
  var busy = false;
  document.body.setAttribute("data-live", "on");

  function apply(doc) {
    var changed = 0;
    if (paused()) return;
    Object.keys(doc.parts || {}).forEach(function (id) {
      var node = document.getElementById(id);
      var holder = document.createElement("div");
      holder.innerHTML = doc.parts[id];
      var fresh = holder.firstElementChild;
      // each section carries a digest of its HTML (data-v): an unchanged one is left as it is
      if (!node || !fresh || fresh.id !== id || node.getAttribute("data-v") === fresh.getAttribute("data-v")) return;
      if (node.contains(document.activeElement) && document.activeElement !== document.body) return;
      node.replaceWith(fresh);
      changed += 1;
    });
    var updated = document.getElementById("updated");
    if (updated && doc.updated) updated.textContent = doc.updated;
    var count = Number(document.body.getAttribute("data-updates") || 0) + 1;
    document.body.setAttribute("data-updates", String(count));
    document.body.setAttribute("data-live", changed ? "changed" : "on");
  }

  function paused() { return document.body.hasAttribute("data-live-paused"); }

  function poll() {
    if (busy || paused()) return;
    busy = true;
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401) { document.body.setAttribute("data-live", "logged-out"); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (doc) { if (doc) apply(doc); })
      .catch(function () { document.body.setAttribute("data-live", "offline"); })
      .then(function () { busy = false; });
  }

  window.setInterval(poll, seconds * 1000);
}

function startLabelsForm() {
  var form = document.getElementById("labels-form");
  if (!form) return;
  var token = meta("csrf-token");
  var result = document.getElementById("labels-result");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var labels = {};
    document.getElementById("labels-input").value.split("\n").forEach(function (line) {
      var parts = line.split(",");
      if (parts.length === 2 && parts[0].trim()) {
        var value = parts[1].trim();
        labels[parts[0].trim()] = isNaN(Number(value)) ? value : Number(value);
      }
    });
    fetch("/api/v1/labels", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
      body: JSON.stringify({labels: labels})
    }).then(function (response) {
      return response.json().then(function (doc) {
        result.textContent = response.ok
          ? "stored " + doc.stored + ", updated " + doc.updated + ", unknown " + doc.unknown
          : "refused: " + (doc.error || doc.message || response.status);
      });
    }).catch(function (error) { result.textContent = "failed: " + error; });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  startLiveUpdates();
  startLabelsForm();
});
