// onecard counter: the sell page's live quote and total, and the receipt that opens by itself.
// Plain JavaScript, no build step; uses onecard.fetch / onecard.debounce from console.js.
(function () {
  "use strict";

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) { el.className = cls; }
    return el;
  }

  function fen(value) {
    var v = String(value || "").replace(/[,¥\s]/g, "");
    if (!/^\d+(\.\d{1,2})?$/.test(v)) { return 0; }
    var parts = v.split(".");
    return parseInt(parts[0], 10) * 100 + parseInt(((parts[1] || "") + "00").slice(0, 2), 10);
  }

  function yuan(f) {
    var whole = Math.floor(f / 100), cents = String(f % 100);
    return whole.toLocaleString("en-US") + "." + (cents.length < 2 ? "0" + cents : cents);
  }

  function showQuote(cell, data) {
    cell.textContent = "";
    if (!data) { return; }
    if (!data.ok) {
      cell.appendChild(text("span", data.error || "?", "error"));
      return;
    }
    if (data.empty) { return; }
    if (data.note) { cell.appendChild(text("span", data.note, "muted")); return; }
    var table = document.createElement("table");
    (data.lines || []).forEach(function (line) {
      var tr = document.createElement("tr");
      tr.appendChild(text("td", line.label));
      tr.appendChild(text("td", line.quantity ? line.quantity + " " + (line.unit || "") : "", "num"));
      tr.appendChild(text("td", line.price ? "× " + line.price : "", "num"));
      tr.appendChild(text("td", line.amount, "num"));
      table.appendChild(tr);
    });
    var sum = document.createElement("tr");
    sum.className = "sum";
    sum.appendChild(text("td", data.quantity ? "= " + data.quantity + " " + (data.unit || "") : "="));
    sum.appendChild(text("td", ""));
    sum.appendChild(text("td", ""));
    sum.appendChild(text("td", "¥" + data.amount, "num"));
    table.appendChild(sum);
    cell.appendChild(table);
    if (data.credit_fen) {
      cell.appendChild(text("div", "+ ¥" + data.credit + " " + (cell.dataset.creditLabel || "credit"), "muted"));
    }
  }

  function setupSale(form) {
    var url = form.dataset.quoteUrl;
    var totalEl = document.getElementById("sale-total");
    var rows = form.querySelectorAll("tr[data-meter]");

    function total() {
      var sum = 0;
      rows.forEach(function (row) {
        var quoted = parseInt(row.dataset.quotedFen || "", 10);
        var amount = row.querySelector("[data-amount]");
        sum += isNaN(quoted) ? fen(amount ? amount.value : "") : quoted;
      });
      if (totalEl) { totalEl.textContent = yuan(sum); }
    }

    rows.forEach(function (row) {
      var meter = row.dataset.meter;
      var amount = row.querySelector("[data-amount]");
      var units = row.querySelector("[data-units]");
      var cell = row.querySelector("[data-quote]");
      var seq = 0;
      var ask = onecard.debounce(function () {
        var body = { meter: meter };
        if (units && units.value.trim()) { body.units = units.value.trim(); }
        else if (amount && amount.value.trim()) { body.amount = amount.value.trim(); }
        delete row.dataset.quotedFen;
        if (!body.units && !body.amount) { showQuote(cell, null); total(); return; }
        var mine = ++seq;
        onecard.fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json", "Accept": "application/json" },
          body: JSON.stringify(body),
        }).then(function (r) { return r.json(); }).then(function (data) {
          if (mine !== seq) { return; }  // an older answer arriving late
          if (data.ok && typeof data.amount_fen === "number" && body.units) {
            row.dataset.quotedFen = String(data.amount_fen);
          }
          showQuote(cell, data);
          total();
        }).catch(function () { /* the quote is a help; the sale checks everything again */ });
      }, 300);
      [amount, units].forEach(function (input) {
        if (input) { input.addEventListener("input", function () { total(); ask(); }); }
      });
      if ((amount && amount.value) || (units && units.value)) { ask(); }
    });
    total();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("sale-form");
    if (form) { setupSale(form); }
    var receipt = document.querySelector("a[data-autoopen]");
    if (receipt && !sessionStorage.getItem("opened:" + receipt.href)) {
      sessionStorage.setItem("opened:" + receipt.href, "1");
      window.open(receipt.href, "_blank", "noopener");  // a blocked pop-up leaves the button
    }
  });
})();
