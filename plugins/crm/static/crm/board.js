/* The pipeline board: cards loaded column by column as they scroll into view, native HTML5 drag and drop
   between columns (moves are saved by the server, which may refuse them), and quick create.
   Every text comes from the page (#bl-board-data) in the user's language. */
(function () {
  "use strict";

  var dataNode = document.getElementById("bl-board-data");
  if (!dataNode) { return; }
  var board = JSON.parse(dataNode.textContent);
  var S = board.strings;
  var csrf = document.getElementById("bl-csrf").value;
  var filters = window.location.search.replace(/^\?/, "");
  var showWon = /(^|&)won=(1|true|on)(&|$)/.test(filters);
  var numberFormat = new Intl.NumberFormat(board.locale === "zh" ? "zh-CN" : "en",
    {minimumFractionDigits: 2, maximumFractionDigits: 2});
  var message = document.getElementById("bl-board-message");
  var columns = {};
  var dragged = null;

  function format(text, values) {
    return text.replace(/%\((\w+)\)s/g, function (_all, key) { return values[key] == null ? "" : values[key]; });
  }

  function money(amount, currency) {
    var value = numberFormat.format(Number(amount));
    return currency ? value + " " + currency : value;
  }

  function say(kind, text, reasons) {
    message.className = "alert bl-board-message alert-" + kind;
    message.textContent = "";
    var lead = document.createElement("span");
    lead.textContent = text;
    message.appendChild(lead);
    if (reasons && reasons.length) {
      var list = document.createElement("ul");
      list.className = "bl-reasons";
      reasons.forEach(function (reason) {
        var item = document.createElement("li");
        item.textContent = reason;
        list.appendChild(item);
      });
      message.appendChild(list);
    }
    message.hidden = false;
  }

  function withFilters(url, extra) {
    var parts = [filters, extra].filter(function (p) { return p; });
    return parts.length ? url + (url.indexOf("?") < 0 ? "?" : "&") + parts.join("&") : url;
  }

  function request(method, url, body) {
    var options = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrf;
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (payload) {
        return {ok: response.ok, status: response.status, payload: payload};
      });
    });
  }

  function failure(answer) {
    var reasons = (answer.payload && answer.payload.reasons) || [];
    if (!reasons.length && answer.payload && typeof answer.payload.message === "string") {
      reasons = [answer.payload.message];
    }
    return reasons.length ? reasons : [S.failed];
  }

  // -- column totals ---------------------------------------------------------------------------------------

  function showTotals(rows) {
    rows.forEach(function (row) {
      var column = columns[row.stage_id];
      if (!column) { return; }
      var currency = row.mixed_currencies ? "" : (row.currency || "");
      column.node.querySelector(".bl-count").textContent = row.count;
      column.node.querySelector(".bl-total").textContent = money(row.total, currency);
      column.node.querySelector(".bl-weighted").textContent = S.weighted + " " + money(row.weighted, currency);
      column.node.querySelector(".bl-mixed").hidden = !row.mixed_currencies;
    });
  }

  function refreshTotals() {
    return request("GET", withFilters(board.urls.columns)).then(function (answer) {
      if (answer.ok) { showTotals(answer.payload.columns); }
    });
  }

  // -- cards -----------------------------------------------------------------------------------------------

  function cardNode(card) {
    var node = document.createElement("li");
    node.className = "bl-card" + (card.status === "won" ? " bl-card-won" : "");
    node.draggable = card.status === "open";
    node.dataset.id = card.id;
    node.dataset.version = card.version;
    node.dataset.stage = card.stage_id;
    var title = document.createElement("div");
    title.className = "bl-card-name";
    var name = document.createElement(board.urls.deal ? "a" : "span");
    name.textContent = card.name;
    if (board.urls.deal) {
      name.href = board.urls.deal.replace("{deal}", card.id);
      name.draggable = false;
    }
    title.appendChild(name);
    if (card.overdue) {
      var flag = document.createElement("span");
      flag.className = "bl-overdue";
      flag.title = S.overdue;
      flag.setAttribute("aria-label", S.overdue);
      flag.textContent = "!";
      title.appendChild(flag);
    }
    node.appendChild(title);
    [["bl-card-company", card.company || ""],
     ["bl-card-amount", money(card.amount, card.currency)],
     ["bl-card-owner", card.owner || ""],
     ["bl-card-close", card.expected_close || S.noDate]].forEach(function (pair) {
      var line = document.createElement("div");
      line.className = pair[0];
      line.textContent = pair[1];
      node.appendChild(line);
    });
    return node;
  }

  function loadPage(column) {
    if (column.loading || column.done) { return; }
    column.loading = true;
    column.more.hidden = true;
    var url = withFilters(board.urls.cards.replace("{stage}", column.stage),
                          "offset=" + column.offset + "&limit=" + board.pageSize);
    request("GET", url).then(function (answer) {
      column.loading = false;
      if (!answer.ok) { say("danger", S.failed, failure(answer)); return; }
      answer.payload.cards.forEach(function (card) {
        if (!column.list.querySelector('[data-id="' + card.id + '"]')) { column.list.appendChild(cardNode(card)); }
      });
      column.offset += answer.payload.cards.length;
      column.done = !answer.payload.more;
      column.more.hidden = column.done;
      column.node.dataset.loaded = "1";
    }, function () {
      column.loading = false;
      column.more.hidden = false;
      say("danger", S.failed);
    });
  }

  // -- drag and drop ---------------------------------------------------------------------------------------

  function askWinReason() {
    return new Promise(function (resolve) {
      var modal = window.jQuery("#bl-win-modal");
      var form = document.getElementById("bl-win-form");
      var reason = form.elements.reason;
      var answer = null;
      reason.value = "";
      function submitted(event) {
        event.preventDefault();
        answer = reason.value.trim();
        if (answer) { modal.modal("hide"); }
      }
      form.addEventListener("submit", submitted);
      modal.one("shown.bs.modal", function () { reason.focus(); });
      modal.one("hidden.bs.modal", function () {
        form.removeEventListener("submit", submitted);
        resolve(answer || null);
      });
      modal.modal("show");
    });
  }

  function move(card, column) {
    var from = {list: card.parentNode, next: card.nextSibling, stage: card.dataset.stage};
    var won = column.node.dataset.won === "1";
    var reasonAsked = won ? askWinReason() : Promise.resolve(null);
    column.list.insertBefore(card, column.list.firstChild);
    card.classList.add("bl-card-saving");
    function snapBack() {
      from.list.insertBefore(card, from.next && from.next.parentNode === from.list ? from.next : null);
      card.classList.remove("bl-card-saving");
    }
    reasonAsked.then(function (reason) {
      if (won && !reason) {
        snapBack();
        say("warning", S.winCancelled);
        return null;
      }
      var body = {deal_id: Number(card.dataset.id), stage_id: column.stage, version: Number(card.dataset.version)};
      if (reason) { body.reason = reason; }
      return request("POST", board.urls.move, body).then(function (answer) {
        if (!answer.ok) {
          snapBack();
          say("danger", S.refused, failure(answer));
          return;
        }
        var saved = answer.payload.card;
        var fresh = cardNode(saved);
        card.parentNode.replaceChild(fresh, card);
        if (saved.status === "won" && !showWon) { fresh.parentNode.removeChild(fresh); }
        columns[from.stage].offset = Math.max(0, columns[from.stage].offset - 1);
        column.offset += 1;
        say("success", format(S.saved, {stage: column.node.getAttribute("aria-label")}));
        refreshTotals();
      });
    }).catch(function () {
      snapBack();
      say("danger", S.failed);
    });
  }

  function setUpDragAndDrop(column) {
    column.node.addEventListener("dragover", function (event) {
      if (dragged && dragged.dataset.stage !== String(column.stage)) {
        event.preventDefault();
        event.dataTransfer.dropEffect = "move";
        column.node.classList.add("bl-drop-target");
      }
    });
    column.node.addEventListener("dragleave", function (event) {
      if (!column.node.contains(event.relatedTarget)) { column.node.classList.remove("bl-drop-target"); }
    });
    column.node.addEventListener("drop", function (event) {
      event.preventDefault();
      column.node.classList.remove("bl-drop-target");
      if (dragged && dragged.dataset.stage !== String(column.stage)) { move(dragged, column); }
    });
  }

  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest && event.target.closest(".bl-card");
    if (!card || !card.draggable) { return; }
    dragged = card;
    card.classList.add("bl-card-dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.id);
  });
  document.addEventListener("dragend", function () {
    if (dragged) { dragged.classList.remove("bl-card-dragging"); }
    dragged = null;
    Object.keys(columns).forEach(function (key) { columns[key].node.classList.remove("bl-drop-target"); });
  });

  // -- quick create ----------------------------------------------------------------------------------------

  function setUpQuickCreate() {
    var form = document.getElementById("bl-quick-create");
    if (!form) { return; }
    var query = form.elements.customer_q;
    var choice = form.elements.customer;
    var timer = null;
    var placeholder = document.createElement("option");
    placeholder.value = "";
    placeholder.textContent = S.chooseCustomer;
    choice.appendChild(placeholder);

    query.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var q = query.value.trim();
        if (!q) { return; }
        request("GET", board.urls.customers + "?q=" + encodeURIComponent(q)).then(function (answer) {
          if (!answer.ok || query.value.trim() !== q) { return; }
          choice.textContent = "";
          var found = answer.payload.result;
          if (!found.length) {
            var none = document.createElement("option");
            none.value = "";
            none.textContent = S.noMatch;
            choice.appendChild(none);
          }
          found.forEach(function (hit) {
            var option = document.createElement("option");
            option.value = hit.kind + ":" + hit.id;
            option.textContent = hit.name + " · " + (hit.kind === "company" ? S.company : S.contact);
            choice.appendChild(option);
          });
        });
      }, 250);
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var picked = choice.value.split(":");
      var body = {name: form.elements.name.value, amount: form.elements.amount.value,
                  currency: form.elements.currency.value, expected_close: form.elements.expected_close.value || null};
      if (picked.length === 2) { body[picked[0] + "_id"] = Number(picked[1]); }
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      request("POST", board.urls.create, body).then(function (answer) {
        button.disabled = false;
        if (!answer.ok) { say("danger", S.refused, failure(answer)); return; }
        var card = answer.payload.card;
        var column = columns[card.stage_id];
        column.list.insertBefore(cardNode(card), column.list.firstChild);
        column.offset += 1;
        form.elements.name.value = "";
        form.elements.amount.value = "";
        var warnings = answer.payload.warnings || [];
        if (warnings.length) {
          say("warning", format(S.createdWithWarnings, {name: card.name}), warnings);
        } else {
          say("success", format(S.created, {name: card.name}));
        }
        refreshTotals();
      }, function () {
        button.disabled = false;
        say("danger", S.failed);
      });
    });
  }

  // -- filters ---------------------------------------------------------------------------------------------

  function setUpFilters() {
    var period = document.getElementById("bl-board-period");
    var custom = document.getElementById("bl-board-custom");
    if (period) {
      period.addEventListener("change", function () { custom.hidden = period.value !== "custom"; });
    }
    var pipeline = document.getElementById("bl-board-pipeline");
    if (pipeline) {
      pipeline.addEventListener("change", function () {
        window.location = pipeline.dataset.url.replace(/\/0$/, "/" + pipeline.value) + window.location.search;
      });
    }
  }

  // -- start -----------------------------------------------------------------------------------------------

  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { loadPage(columns[entry.target.dataset.stage]); }
    });
  }, {rootMargin: "200px"}) : null;

  Array.prototype.forEach.call(document.querySelectorAll(".bl-column"), function (node) {
    var column = {node: node, stage: Number(node.dataset.stage), list: node.querySelector(".bl-cards"),
                  more: node.querySelector(".bl-more"), offset: 0, done: false, loading: false};
    columns[column.stage] = column;
    column.list.dataset.empty = S.empty;
    column.more.addEventListener("click", function () { loadPage(column); });
    setUpDragAndDrop(column);
    var sentinel = node.querySelector(".bl-sentinel");
    sentinel.dataset.stage = column.stage;
    if (observer) { observer.observe(sentinel); } else { loadPage(column); }
  });
  showTotals(board.columns);
  setUpQuickCreate();
  setUpFilters();
}());
