// The canary check view: does a model type a planted secret after the prefix?
// It always runs on the server (POST /api/canary-check): a simulation view, not typing.

/** Wire the canary view; returns showView(name) for the tabs. */
export function initCanary(showError) {
  const $ = (id) => document.getElementById(id);
  const canaryBox = $("canary-prefix");
  const canaryList = $("canary-results");
  let planted = null; // GET /api/canaries: per model, the synthetic secrets planted in its training

  async function loadCanaries() {
    if (planted) return;
    const r = await fetch("/api/canaries", { cache: "no-store" });
    planted = await r.json();
    if (!canaryBox.value) canaryBox.value = planted.prefix;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const bits = (x) => (typeof x === "number" ? `${x.toFixed(2)} bits` : "—");

  function leakBadge(row) {
    if (row.error) return el("span", "leak-badge error", "error");
    if (row.leaks) return el("span", "leak-badge leaks", `LEAKS ${row.matched_words}/${planted.words} words`);
    const b = el("span", "leak-badge safe", "does not leak");
    // Count only when the strip itself got some of the secret right, not just the words typed by the user.
    if (row.trained_with_canaries && row.matched_words > row.typed_words) b.textContent += ` (${row.matched_words}/${planted.words} words)`;
    return b;
  }

  function canaryRow(row, prefix) {
    const li = el("li", "canary-row" + (row.leaks ? " leaking" : ""));
    li.dataset.model = row.name;
    li.dataset.leaks = String(!!row.leaks);
    const head = el("div", "canary-head");
    head.append(el("span", "canary-name", row.label), el("span", "badge" + (row.private ? " private" : ""), row.privacy), leakBadge(row));
    const typed = el("div", "canary-typed");
    typed.append(el("span", "muted", prefix + " "));
    const words = el("span", "canary-completion");
    (row.completion || []).forEach((w, i) => {
      words.append(el("span", "w" + (row.secret && row.typed_words + i < row.matched_words ? " hit" : ""), w), " ");
    });
    typed.append(words);
    li.append(head, typed);
    const info = planted.models.find((m) => m.name === row.name) || { canaries: [] };
    const meta = el("ul", "canary-meta");
    if (row.error) meta.append(el("li", "", row.error));
    else if (info.trained_with_canaries === null) meta.append(el("li", "", "unknown whether canaries were planted (unreadable config)"));
    else if (!info.trained_with_canaries) meta.append(el("li", "", "trained without canaries: nothing planted to leak"));
    else meta.append(el("li", "", "secrets planted in its training data:"));
    for (const c of info.canaries) {
      const item = el("li", c.secret === row.secret ? "closest" : "");
      item.append(el("span", "secret", `“${c.secret}”`), ` typed ${c.repetitions}× · exposure ${bits(c.exposure)}`);
      if (typeof c.rank === "number") item.append(` (rank ${c.rank}/${c.references})`);
      meta.append(item);
    }
    li.append(meta);
    return li;
  }

  async function runCanaryCheck() {
    const button = $("canary-run");
    button.disabled = true;
    canaryList.dataset.state = "pending";
    try {
      await loadCanaries();
      const prefix = canaryBox.value.trim();
      const r = await fetch("/api/canary-check", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: prefix }),
        cache: "no-store",
      });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || `error ${r.status}`);
      showError("");
      canaryList.replaceChildren(...data.models.map((row) => canaryRow(row, prefix)));
      canaryList.dataset.state = "done";
    } catch (e) {
      showError(e instanceof TypeError ? "the demo server is unreachable" : String(e.message || e));
      canaryList.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  }

  function showView(name) {
    for (const v of ["keyboard", "canary"]) {
      const on = v === name;
      $(`tab-${v}`).setAttribute("aria-selected", String(on));
      $(`view-${v}`).hidden = !on;
    }
    document.body.dataset.view = name;
    if (name === "canary") loadCanaries().then(() => canaryBox.focus()).catch(() => showError("could not load the canaries"));
  }

  $("tab-keyboard").addEventListener("click", () => showView("keyboard"));
  $("tab-canary").addEventListener("click", () => showView("canary"));
  $("canary-run").addEventListener("click", runCanaryCheck);
  canaryBox.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.isComposing) runCanaryCheck();
  });
  return showView;
}
