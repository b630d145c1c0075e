/* Embeds a BigLedger lead form where this script tag stands:
 *   <script src="https://crm.example.com/static/crm_assets/crm/lead_form_embed.js"
 *           data-bigledger-form="https://crm.example.com/crm/f/spring-expo" async></script>
 * The form opens in a frame; the page's UTM parameters and its referrer go with it, and the frame grows
 * to the form's height. Optional: data-lang="zh" or "en". */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) { return; }
  var address = script.getAttribute("data-bigledger-form");
  if (!address) { return; }
  var target;
  try { target = new URL(address, document.baseURI); } catch (e) { return; }
  if (target.protocol !== "https:" && target.protocol !== "http:") { return; }
  var page = new URLSearchParams(window.location.search);
  ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"].forEach(function (key) {
    if (page.get(key)) { target.searchParams.set(key, page.get(key)); }
  });
  target.searchParams.set("ref", document.referrer || window.location.href);
  var lang = script.getAttribute("data-lang");
  if (lang) { target.searchParams.set("lang", lang); }
  var frame = document.createElement("iframe");
  frame.src = target.href;
  frame.title = script.getAttribute("data-title") || "";
  frame.style.width = "100%";
  frame.style.minHeight = "480px";
  frame.style.border = "0";
  script.parentNode.insertBefore(frame, script);
  window.addEventListener("message", function (event) {
    if (event.source !== frame.contentWindow || event.origin !== target.origin) { return; }
    var data = event.data || {};
    if (data.bigledgerForm === "height" && typeof data.height === "number" && data.height > 0 && data.height < 20000) {
      frame.style.height = Math.ceil(data.height) + "px";
    }
  });
})();
