// Live refresh of the whole overview: every 2 s while the toggle is on and
// the tab is visible, the server renders the overview again and it
// replaces the old one. "Select all" on job lists. Without JavaScript the
// pages are the same, only static, and jobs are selected one by one.
(function () {
  var overview = document.getElementById('overview');
  var toggle = document.getElementById('live-toggle');
  if (overview && toggle) {
    var busy = false;
    setInterval(function () {
      if (!toggle.checked || document.hidden || busy) return;
      busy = true;
      fetch(overview.dataset.live, { credentials: 'same-origin' })
        .then(function (r) {
          // A lapsed or revoked session answers with the login page.
          if (r.redirected || !r.ok) { toggle.checked = false; return null; }
          return r.text();
        })
        .then(function (html) { if (html !== null) overview.innerHTML = html; })
        .catch(function () {})
        .then(function () { busy = false; });
    }, 2000);
  }
  document.querySelectorAll('input[data-select-all]').forEach(function (all) {
    all.addEventListener('change', function () {
      all.form.querySelectorAll('input[name=id]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
})();
