// keyboard_fl demo: a phone keyboard's suggestion strip.
// On this device (default): the run's export runs in the page (./ondevice/),
// no request per key press, typed text never leaves the page. On the server
// (?mode=server, or the toggle): every key press asks /api/suggest.
// Either way only the answer to the latest key press is shown.
import { initCanary } from "./canary.js";
import { OnDeviceSuggester } from "./ondevice/engine.js";
import { PersonalCache } from "./ondevice/personal.js";

(() => {
  const CONTEXT_CHARS = 400; // the model only needs the recent past; keeps requests small
  const WORD = /^[\p{L}\p{N}\p{M}]+(?:'[\p{L}\p{N}\p{M}]+)*$/u; // keyboard_fl.text.WORD_RE
  const $ = (id) => document.getElementById(id);
  const box = $("message");
  const strip = $("strip");
  const slots = Array.from(strip.querySelectorAll(".suggestion"));
  const modelsBox = $("models");

  let models = [];
  let current = null;
  let seq = 0; // id of the latest request; answers to older ones are stale
  let shown = []; // suggestions in rank order (0 = most likely)
  let shift = false;
  const params = new URLSearchParams(location.search);
  let where = params.get("mode") === "server" ? "server" : "device"; // where the user wants suggestions computed
  const engines = new Map(); // model name → Promise<OnDeviceSuggester>
  let queue = Promise.resolve(); // on-device calls run one at a time (the engine keeps state between them)
  const personal = PersonalCache.load(); // what this browser learned from the messages sent here (localStorage only)
  let personalized = params.get("personal") !== "off"; // the toggle: personalized or the global model alone
  const timings = []; // per key press: ms from the key press to the strip, for the benchmark
  const engineTimings = []; // per key press: ms the model took (in the page, or as the server reports it)

  // ---------- text helpers (mirror keyboard_fl.suggest.Suggester.split_context) ----------
  const beforeCaret = () => box.value.slice(0, box.selectionStart);

  function lastCodePoints(text, n) {
    const cps = Array.from(text); // never cut a surrogate pair in half
    return cps.length > n ? cps.slice(-n).join("") : text;
  }

  function partialWord(before) {
    if (before === "" || /\s$/u.test(before)) return null;
    const m = before.match(/\S+$/u);
    return m && WORD.test(m[0]) ? m[0] : null;
  }

  function sentenceStart(before) {
    return before.trim() === "" || /[.!?]\s*$/u.test(before);
  }

  function matchCase(typed, word) {
    if (typed.length > 1 && typed === typed.toUpperCase() && typed !== typed.toLowerCase()) return word.toUpperCase();
    if (typed && typed[0] !== typed[0].toLowerCase()) return word[0].toUpperCase() + word.slice(1);
    return word;
  }

  // ---------- accept a suggestion ----------
  function accept(rank) {
    const word = shown[rank];
    if (!word) return false;
    let before = beforeCaret();
    const after = box.value.slice(box.selectionEnd);
    const partial = partialWord(before);
    let out = word;
    if (partial !== null) {
      before = before.slice(0, before.length - partial.length); // replace the word being typed
      out = matchCase(partial, word); // "Hel" → "Hello", "HEL" → "HELLO"
    } else {
      if (before !== "" && !/\s$/u.test(before)) before += " "; // after punctuation: start a new word
      if (sentenceStart(before)) out = word[0].toUpperCase() + word.slice(1);
    }
    const space = after.startsWith(" ") ? "" : " ";
    box.value = before + out + space + after;
    const caret = before.length + out.length + 1;
    box.setSelectionRange(caret, caret);
    box.focus();
    refresh();
    return true;
  }

  // ---------- strip ----------
  function render(words) {
    shown = words.slice(0, 3);
    for (const el of slots) {
      const w = shown[Number(el.dataset.rank)] || "";
      el.textContent = w;
      el.setAttribute("aria-label", w ? `accept ${w}` : "no suggestion");
      el.disabled = !w;
    }
    strip.classList.remove("stale");
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  // ---------- on this device ----------
  const currentModel = () => models.find((x) => x.name === current);
  const onDevice = () => where === "device" && !!(currentModel() || {}).ondevice;

  function engineFor(name) {
    const m = models.find((x) => x.name === name);
    if (!m || !m.ondevice) return Promise.reject(new Error(`model ${name} has no export to run on this device`));
    if (!engines.has(name)) {
      const precision = params.get("precision") === "float32" ? "model_float" : "model";
      engines.set(name, OnDeviceSuggester.load({ ...m.ondevice, model: m.ondevice[precision] }));
    }
    return engines.get(name);
  }

  function showWhere() {
    const el = $("where");
    const dev = onDevice();
    el.dataset.where = dev ? "device" : "server";
    el.textContent = dev ? "runs on this device" : "computed on the server";
    document.body.dataset.where = el.dataset.where;
  }

  async function refreshOnDevice(my, text, t0) {
    const name = current;
    queue = queue.then(async () => {
      if (my !== seq) return; // a newer key press is queued: skip this one
      let engine;
      try {
        engine = await engineFor(name);
      } catch (e) {
        // No runtime or no export (e.g. set-up without npm): this model falls back to the server, visibly.
        const m = models.find((x) => x.name === name);
        if (m) m.ondevice = null;
        engines.delete(name);
        showError(`this model cannot run on this device (${e.message || e}); suggestions come from the server`);
        if (name === current) selectModel(name);
        return;
      }
      try {
        const t1 = performance.now();
        const opts = personalized ? { personal } : { userWords: false };
        const { words, kind } = await engine.suggestScored(text, 3, opts);
        const t2 = performance.now();
        if (my !== seq) return;
        showError("");
        render(words.map(([w]) => w));
        timings.push(performance.now() - t0);
        engineTimings.push(t2 - t1);
        $("latency-server").textContent = `${(t2 - t1).toFixed(1)} ms`;
        $("latency-rtt").textContent = `${(performance.now() - t0).toFixed(1)} ms`;
        $("kind").textContent = kind === "completion" ? "completing" : "next word";
        strip.dataset.seq = String(my);
      } catch (e) {
        if (my === seq) {
          showError(`on-device model failed: ${e.message || e}`);
          render([]);
          strip.dataset.seq = String(my);
        }
      }
    });
    return queue;
  }

  async function refresh() {
    if (!current) return;
    const my = ++seq;
    const text = lastCodePoints(beforeCaret(), CONTEXT_CHARS);
    const t0 = performance.now();
    strip.dataset.pending = String(my);
    // Dim the strip only if an answer is slow to come (no flicker at normal speed).
    setTimeout(() => { if (strip.dataset.seq !== String(my) && seq === my) strip.classList.add("stale"); }, 150);
    if (onDevice()) return refreshOnDevice(my, text, t0);
    try {
      const r = await fetch("/api/suggest", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: current, text }),
        cache: "no-store",
      });
      const data = await r.json();
      if (my !== seq) return; // a newer key press is in flight: drop this answer
      if (!r.ok) {
        showError(data.error || `error ${r.status}`);
        render([]);
        strip.dataset.seq = String(my);
        return;
      }
      showError("");
      render(data.suggestions);
      timings.push(performance.now() - t0);
      engineTimings.push(data.ms);
      $("latency-server").textContent = `${data.ms.toFixed(1)} ms`;
      $("latency-rtt").textContent = `${(performance.now() - t0).toFixed(1)} ms`;
      $("kind").textContent = data.kind === "completion" ? "completing" : "next word";
      strip.dataset.seq = String(my);
    } catch (e) {
      if (my === seq) showError("the demo server is unreachable");
    }
  }

  // ---------- models ----------
  const pct = (x) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);

  function selectModel(name) {
    current = name;
    const m = models.find((x) => x.name === name);
    const badge = $("model-badge");
    badge.textContent = m ? `${m.label} · ${m.privacy}` : "";
    badge.classList.toggle("private", !!(m && m.private));
    document.body.dataset.model = name;
    const dev = document.querySelector("input[name=where][value=device]");
    dev.disabled = !(m && m.ondevice);
    showWhere();
    if (onDevice()) engineFor(name).catch(() => {}); // start downloading the model now
    refresh();
  }

  function modelCard(m, checked) {
    const label = document.createElement("label");
    label.className = "model-card";
    label.dataset.model = m.name;
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "model";
    input.value = m.name;
    input.checked = checked;
    input.addEventListener("change", () => selectModel(m.name));
    const title = document.createElement("span");
    title.className = "model-title";
    const name = document.createElement("span");
    name.textContent = m.label + (m.label.toLowerCase() === m.name ? "" : ` (${m.name})`);
    const badge = document.createElement("span");
    badge.className = "badge" + (m.private ? " private" : "");
    badge.textContent = m.privacy;
    title.append(name, badge);
    const metrics = document.createElement("span");
    metrics.className = "model-metrics";
    metrics.textContent = `top-1 ${pct(m.top1)} · top-3 ${pct(m.top3)} · KSR ${pct(m.ksr)}` +
      (m.ondevice ? ` · on-device ${m.ondevice.precision}` : " · server only");
    label.append(input, title, metrics);
    if (m.empirical) { // measured by keyboard-fl audit (canary clients): beside the accounted ε
      const e = m.empirical, f = (x) => (x === null ? "∞" : x.toFixed(2));
      const measured = document.createElement("span");
      measured.className = "model-metrics";
      measured.textContent = `measured: ε_est ${f(e.epsilon_est)} · ε_lower ${f(e.epsilon_lower)} ` +
        `(${Math.round(100 * e.confidence)}% conf.)`;
      label.append(measured);
    }
    return label;
  }

  async function loadModels() {
    try {
      const r = await fetch("/api/models", { cache: "no-store" });
      const data = await r.json();
      models = data.models;
      $("models-empty").remove();
      for (const m of models) modelsBox.append(modelCard(m, m.name === data.default));
      selectModel(data.default);
    } catch (e) {
      showError("could not load the models");
    }
  }

  // ---------- sending ----------
  function send() {
    const msg = box.value.trim();
    if (!msg) return;
    const li = document.createElement("li");
    li.className = "bubble me";
    li.textContent = msg; // page memory only; never sent anywhere
    $("thread").append(li);
    learn(msg);
    li.scrollIntoView({ block: "end" });
    box.value = "";
    refresh();
  }

  // ---------- personalization (this browser only) ----------
  function showPersonal() {
    const n = personal.size;
    $("personal-count").textContent = `${n} word${n === 1 ? "" : "s"} learned on this device`;
    $("personal-reset").disabled = n === 0;
    strip.dataset.personal = personalized ? "on" : "off";
  }

  function learn(msg) {
    // The sent message joins the cache in localStorage, never a request (its words need the tokenizer's normalization).
    const name = current;
    queue = queue.then(async () => {
      try {
        const eng = await engineFor(name);
        personal.learnWords(eng.words(msg));
        personal.save();
      } catch (e) {
        /* no on-device model: nothing is learned */
      }
      showPersonal();
    });
  }

  $("personal-on").checked = personalized;
  $("personal-on").addEventListener("change", (e) => {
    personalized = e.target.checked;
    showPersonal();
    refresh();
  });
  $("personal-reset").addEventListener("click", () => {
    queue = queue.then(() => {
      personal.clear();
      showPersonal();
    });
    refresh();
  });
  window.addEventListener("storage", (e) => {
    if (e.key !== null && e.key !== "keyboard_fl.personal.v1") return;
    Object.assign(personal, PersonalCache.load()); // another tab learned or reset
    showPersonal();
  });

  // ---------- on-screen keyboard ----------
  const ROWS = [
    ["q", "w", "e", "r", "t", "y", "u", "i", "o", "p"],
    ["a", "s", "d", "f", "g", "h", "j", "k", "l"],
    ["⇧", "z", "x", "c", "v", "b", "n", "m", "⌫"],
    [",", "space", ".", "⏎"],
  ];

  function typeText(s) {
    const start = box.selectionStart;
    box.setRangeText(s, start, box.selectionEnd, "end");
    box.dispatchEvent(new Event("input"));
  }

  function press(k, btn) {
    if (k === "⇧") {
      shift = !shift;
      btn.classList.toggle("on", shift);
      for (const b of $("keys").querySelectorAll(".key.letter")) b.textContent = shift ? b.dataset.k.toUpperCase() : b.dataset.k;
      return;
    }
    if (k === "⌫") {
      const s = box.selectionStart;
      if (s !== box.selectionEnd) box.setRangeText("", s, box.selectionEnd, "end");
      else if (s > 0) {
        const cut = Array.from(box.value.slice(0, s)).slice(-1)[0].length;
        box.setRangeText("", s - cut, s, "end");
      }
      box.dispatchEvent(new Event("input"));
      return;
    }
    if (k === "⏎") return send();
    if (k === "space") return typeText(" ");
    typeText(shift ? k.toUpperCase() : k);
    if (shift) press("⇧", $("keys").querySelector('[data-k="⇧"]'));
  }

  function buildKeys() {
    for (const row of ROWS) {
      const div = document.createElement("div");
      div.className = "krow";
      for (const k of row) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "key" + (/^\p{L}$/u.test(k) ? " letter" : "") + (["⇧", "⌫", "⏎"].includes(k) ? " wide" : "") + (k === "space" ? " space" : "");
        b.dataset.k = k;
        b.textContent = k === "space" ? "space" : k;
        b.tabIndex = -1;
        b.addEventListener("mousedown", (e) => e.preventDefault()); // keep the caret in the message box
        b.addEventListener("click", () => press(k, b));
        div.append(b);
      }
      $("keys").append(div);
    }
  }

  // ---------- wiring ----------
  for (const el of slots) {
    el.addEventListener("mousedown", (e) => e.preventDefault());
    el.addEventListener("click", () => accept(Number(el.dataset.rank)));
  }
  box.addEventListener("input", refresh);
  box.addEventListener("click", refresh); // caret moved
  box.addEventListener("keyup", (e) => {
    if (e.key.startsWith("Arrow") || e.key === "Home" || e.key === "End") refresh();
  });
  box.addEventListener("keydown", (e) => {
    if (e.altKey && !e.ctrlKey && !e.metaKey && /^(Digit|Numpad)[123]$/.test(e.code)) {
      const slot = Number(e.code.slice(-1)) - 1; // by position, left to right (e.key differs by layout)
      accept(Number(slots[slot].dataset.rank));
      e.preventDefault();
      return;
    }
    if (e.key === "Tab" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
      if (accept(0)) e.preventDefault();
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("send").addEventListener("mousedown", (e) => e.preventDefault());
  $("send").addEventListener("click", send);
  initCanary(showError);

  for (const r of document.querySelectorAll("input[name=where]")) {
    r.checked = r.value === where;
    r.addEventListener("change", () => {
      where = r.value;
      showWhere();
      refresh();
    });
  }

  // Inspection hook for the browser tests and benchmark: the in-page engine, no server involved.
  window.kfl = {
    engine: (name) => engineFor(name || current),
    timings,
    engineTimings,
    where: () => (onDevice() ? "device" : "server"),
    personal,
  };

  buildKeys();
  showPersonal();
  render([]);
  loadModels();
  box.focus();
})();
