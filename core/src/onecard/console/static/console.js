// onecard console: a little plain JavaScript, no build step.
// - a form button marked data-once is disabled after the first submit (no double sale);
// - onecard.fetch() sends the CSRF token with every request;
// - "/" focuses the page's search box, Esc leaves a field.
(function () {
  "use strict";
  var token = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };
  window.onecard = {
    fetch: function (url, options) {
      options = options || {};
      options.headers = Object.assign({ "X-CSRF-Token": token() }, options.headers || {});
      options.credentials = "same-origin";
      return window.fetch(url, options);
    },
    debounce: function (fn, ms) {
      var timer = null;
      return function () {
        var args = arguments, self = this;
        clearTimeout(timer);
        timer = setTimeout(function () { fn.apply(self, args); }, ms);
      };
    },
  };
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitted === "1") { event.preventDefault(); return; }
    var once = form.querySelectorAll("button[data-once]");
    if (once.length) {
      form.dataset.submitted = "1";
      once.forEach(function (b) { b.setAttribute("aria-busy", "true"); });
      // disable after the submit has been taken, so the button's own name/value is sent
      setTimeout(function () { once.forEach(function (b) { b.disabled = true; }); }, 0);
    }
  });
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    var typing = tag === "input" || tag === "textarea" || tag === "select";
    if (event.key === "/" && !typing) {
      var search = document.querySelector("[data-search]");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
    } else if (event.key === "Escape" && typing) {
      event.target.blur();
    }
  });
})();
