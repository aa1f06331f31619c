// Live refresh of the overview's counts: polls the JSON twin of the
// table every 2 s while the toggle is on. Without JavaScript the page is
// the same, only static.
(function () {
  var table = document.querySelector('table[data-live]');
  var toggle = document.getElementById('live-toggle');
  if (!table || !toggle) return;
  function refresh() {
    if (!toggle.checked || document.hidden) return;
    fetch(table.dataset.live, { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (queues) {
        if (!queues) return;
        queues.forEach(function (q) {
          var row = table.querySelector('tr[data-queue="' + q.queue + '"]');
          if (!row) return;
          row.querySelectorAll('td[data-field]').forEach(function (cell) {
            var value = String(q[cell.dataset.field]);
            var link = cell.querySelector('a');
            (link || cell).textContent = value;
          });
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 2000);
})();
