/* The public lead form inside an embedding page: tell the page how tall the form is, so the frame fits. */
(function () {
  "use strict";
  if (window.parent === window) { return; }
  function report() {
    window.parent.postMessage({bigledgerForm: "height", height: document.documentElement.scrollHeight}, "*");
  }
  window.addEventListener("load", report);
  window.addEventListener("resize", report);
  report();
})();
