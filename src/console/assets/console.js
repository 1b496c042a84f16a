// Live regions: an element with data-poll="URL" is refreshed from URL
// every 1.5 s until the server answers with the X-Strata-Done header.
(function () {
  function poll(el) {
    var url = el.getAttribute('data-poll');
    if (!url) return;
    fetch(url, { credentials: 'same-origin' }).then(function (r) {
      if (!r.ok) return null;
      var done = r.headers.get('X-Strata-Done') === '1';
      return r.text().then(function (t) {
        el.innerHTML = t;
        if (done) { el.removeAttribute('data-poll'); } else { setTimeout(function () { poll(el); }, 1500); }
      });
    }).catch(function () { setTimeout(function () { poll(el); }, 5000); });
  }
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('[data-poll]').forEach(function (el) {
      setTimeout(function () { poll(el); }, 1500);
    });
  });
})();
