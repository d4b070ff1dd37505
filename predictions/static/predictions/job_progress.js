// Keeps a batch job's progress bar current on its admin page while the job runs: the page's
// progress URL is read every second until the job has ended.
"use strict";
(function () {
  function text(figures) {
    const share = figures.total ? figures.completed / figures.total : 1;
    let out = figures.completed.toLocaleString("en-US") + " / " +
      figures.total.toLocaleString("en-US") + " rows (" + Math.round(share * 100) + "%)";
    if (figures.rows_per_second) {
      out += ", " + Math.round(figures.rows_per_second).toLocaleString("en-US") + " rows/s";
    }
    if (figures.estimated_completion) {
      const time = new Date(figures.estimated_completion).toISOString().substring(11, 19);
      out += ", " + (figures.terminal ? "ended" : "ends about") + " " + time + " UTC";
    }
    return out;
  }

  function follow(element) {
    const bar = element.querySelector("progress");
    const label = element.querySelector(".job-progress-text");
    async function poll() {
      const response = await fetch(element.dataset.url, {credentials: "same-origin"});
      if (!response.ok) return;
      const figures = await response.json();
      bar.max = figures.total;
      bar.value = figures.completed;
      label.textContent = text(figures);
      element.dataset.terminal = String(figures.terminal);
      if (!figures.terminal) setTimeout(poll, 1000);
    }
    if (element.dataset.terminal !== "true") setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".job-progress").forEach(follow);
  });
})();
