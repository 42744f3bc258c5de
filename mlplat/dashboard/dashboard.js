// The dashboard's one script: sends delayed labels as JSON, with the session's CSRF token in a header.
// The server refuses a state-changing request without that token (403), whatever its origin.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("labels-form");
  if (!form) return;
  var token = document.querySelector("meta[name='csrf-token']").getAttribute("content");
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
});
