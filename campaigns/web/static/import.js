// The import page's progress: ask every second, update the counts, reload when it is done.
(function () {
  const box = document.getElementById("progress");
  if (!box) return;
  const set = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };
  async function poll() {
    try {
      const answer = await fetch(box.dataset.url, { headers: { Accept: "application/json" } });
      if (answer.ok) {
        const state = await answer.json();
        set("checked", state.checked);
        set("written", state.written);
        if (!state.working) { window.location.reload(); return; }
      }
    } catch (e) { /* the next poll tries again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
