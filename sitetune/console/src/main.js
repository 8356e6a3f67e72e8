// The sitetune ops console: a single page whose views are chosen by the URL fragment
// (#/models, #/jobs/<id>, #/promote/<name>/<version>, #/results/<id>, ...). Every number it
// shows comes from the HTTP API (API.md) called with the signed-in token; what a token's
// roles may not see is neither linked nor fetched.
import { ApiError, download, request, setToken, token, upload } from "./api.js";
import { errorBox, fill, fmt, h, lineChart, lineage, stateBadge, table, when } from "./ui.js";
import { beginLogin, finishLogin } from "./oidc.js";
import { ResultViewer } from "./viewer.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let principal = null;
let timers = [];
let config = { oidc: null };  // GET /console/config: how to sign in

const SECTIONS = [
  { path: "models", title: "Models", roles: ["ops"] },
  { path: "jobs", title: "Jobs", roles: ["ops"] },
  { path: "results", title: "Results", roles: ["clinical", "ops"] },
  { path: "pacs", title: "PACS", roles: ["pacs", "ops"] },
  { path: "audit", title: "Audit log", roles: ["ops"] },
];

const may = (section) =>
  principal && (principal.roles.includes("ops") || section.roles.some((r) => principal.roles.includes(r)));

function every(ms, fn) {
  const id = setInterval(fn, ms);
  timers.push(id);
}

function show(...nodes) {
  fill(view, nodes);
}

// ---------------------------------------------------------------- sign in
function signInView(message) {
  const input = h("input", { type: "password", name: "token", autocomplete: "off",
    placeholder: "bearer token (or an OIDC access token)", "data-testid": "token", required: true });
  const form = h("form", { class: "inline", "data-testid": "sign-in",
    onsubmit: async (event) => {
      event.preventDefault();
      setToken(input.value.trim());
      await start();
    } },
  h("label", {}, "Token", input), h("button", { type: "submit" }, "Sign in"));
  const sso = config.oidc
    ? h("div", { class: "card" }, h("button", { "data-testid": "oidc-sign-in",
      onclick: () => beginLogin(config.oidc).catch((e) => show(errorBox(e))) },
    `Sign in with ${new URL(config.oidc.issuer).host}`), h("span", { class: "muted" },
      " your organisation's account; or paste a token below."))
    : null;
  show(h("h1", {}, "Sign in"), message ? errorBox(message) : null, sso,
    h("p", { class: "muted" }, "Paste the token an operator gave you (`sitetune tokens create`)",
      config.oidc ? " or an access token from your identity provider" : "", ". It is kept in this tab only."),
    form);
  input.focus();
}

async function start() {
  try {
    config = await request("/console/config");
  } catch {
    config = { oidc: null };
  }
  try {
    const issued = await finishLogin(config.oidc);
    if (issued) setToken(issued);
  } catch (error) {
    return signInView(error);
  }
  if (!token()) return signInView();
  try {
    principal = await request("/v1/whoami");
  } catch (error) {
    setToken(null);
    principal = null;
    renderNav();
    if (error.status === 401 || error.status === 403) {
      return signInView(new ApiError(error.status, error.code,
        `The service refused this token: ${error.message}`));
    }
    return signInView(error);
  }
  renderNav();
  if (!location.hash || location.hash === "#/") {
    location.hash = `#/${SECTIONS.find(may).path}`;
  } else {
    route();
  }
}

function renderNav() {
  fill(nav, ...SECTIONS.filter(may).map((section) =>
    h("a", { href: `#/${section.path}`, "data-section": section.path }, section.title)));
  fill(who, ...(principal
    ? [`${principal.name} · ${principal.roles.join(", ")}`,
      h("button", { class: "secondary", onclick: () => { setToken(null); principal = null;
        renderNav(); signInView(); } }, "Sign out")]
    : []));
}

// ---------------------------------------------------------------- router
const ROUTES = [
  [/^#\/models$/, modelsView, "models"],
  [/^#\/models\/([^/]+)$/, modelView, "models"],
  [/^#\/promote\/([^/]+)\/(\d+)$/, promoteView, "models"],
  [/^#\/jobs$/, jobsView, "jobs"],
  [/^#\/jobs\/([0-9a-f]+)$/, jobView, "jobs"],
  [/^#\/results$/, resultsView, "results"],
  [/^#\/results\/([0-9a-f]+)$/, resultView, "results"],
  [/^#\/pacs$/, pacsView, "pacs"],
  [/^#\/audit$/, auditView, "audit"],
];

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  if (!principal) return start();
  const hash = location.hash || "#/";
  for (const [pattern, render, section] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of nav.querySelectorAll("a")) {
      link.classList.toggle("active", link.dataset.section === section);
    }
    if (!may(SECTIONS.find((s) => s.path === section))) {
      return show(errorBox({ message: `Your roles (${principal.roles.join(", ")}) do not include this section.`,
        code: "forbidden" }));
    }
    // each visit renders into its own container: a slower earlier view that finishes
    // late writes into a detached one, never over the page the user went to
    const container = h("div");
    show(container);
    const into = (...nodes) => fill(container, nodes);
    try {
      await render(into, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      if (container.isConnected) into(errorBox(error));
      if (error.status === 401 && container.isConnected) signInView(error);
    }
    return;
  }
  show(errorBox({ message: `No page ${hash}`, code: "not_found" }));
}

window.addEventListener("hashchange", route);

// ---------------------------------------------------------------- models
async function modelsView(show) {
  const { models } = await request("/v1/models");
  show(h("h1", {}, "Models"), table([
    { title: "model", value: (m) => h("a", { href: `#/models/${m.name}` }, m.name) },
    { title: "production", value: (m) => fmt(m.aliases.production) , num: true },
    { title: "aliases", value: (m) => Object.entries(m.aliases).map(([a, v]) => `${a} → v${v}`).join(", ") },
    { title: "versions", value: (m) => m.versions.length, num: true },
  ], models, { "data-testid": "models" }));
}

function metricsSummary(card) {
  const evaluation = card.metrics?.site_evaluation;
  if (evaluation?.candidate) return `held-out mean Dice ${fmt(evaluation.candidate.mean_dice)}`;
  const dice = card.metrics && Object.entries(card.metrics).find(([, v]) => typeof v === "number");
  return dice ? `${dice[0]} ${fmt(dice[1])}` : "—";
}

async function modelView(show, name) {
  const model = await request(`/v1/models/${encodeURIComponent(name)}`);
  const production = model.aliases.production;
  const reason = h("input", { type: "text", placeholder: "reason", "data-testid": "rollback-reason" });
  const status = h("div");
  const rollback = h("form", { class: "inline", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await request(`/v1/models/${name}/rollback`, { method: "POST", json: { reason: reason.value } });
      await modelView(show, name);
    } catch (error) {
      fill(status, errorBox(error));
    }
  } }, reason, h("button", { class: "secondary", type: "submit" }, "Roll production back"));
  show(
    h("h1", {}, `Model ${model.name}`),
    h("p", {}, "Production: ", h("strong", { "data-testid": "production" }, production ? `v${production}` : "none")),
    h("h2", {}, "Lineage"),
    lineage(model, (v) => `#/promote/${name}/${v.version}`),
    h("h2", {}, "Versions"),
    table([
      { title: "version", value: (v) => `v${v.version}`, num: true },
      { title: "aliases", value: (v) => Object.entries(model.aliases).filter(([, n]) => n === v.version)
        .map(([a]) => a).join(", ") },
      { title: "parent", value: (v) => v.parent || "—" },
      { title: "created", value: (v) => `${when(v.created_at)} by ${v.created_by}` },
      { title: "evaluation", value: (v) => metricsSummary(v.card) },
      { title: "", value: (v) => v.version === production ? h("span", { class: "muted" }, "in production")
        : h("a", { href: `#/promote/${name}/${v.version}`, "data-testid": `review-${v.version}` },
          "review and promote") },
    ], [...model.versions].reverse(), { "data-testid": "versions" }),
    h("h2", {}, "Roll back"), rollback, status,
    h("h2", {}, "Cards"),
    [...model.versions].reverse().map((v) => h("details", {},
      h("summary", {}, `v${v.version} card and provenance`),
      h("pre", {}, JSON.stringify(v.card, null, 2)))),
  );
}

// ---------------------------------------------------------------- promotion
function diffCell(value) {
  if (value === null || value === undefined) return "—";
  return h("span", { class: value < -0.001 ? "diff-neg" : value > 0.001 ? "diff-pos" : "" },
    `${value > 0 ? "+" : ""}${value.toFixed(4)}`);
}

async function promoteView(show, name, versionText) {
  const version = Number(versionText);
  const model = await request(`/v1/models/${encodeURIComponent(name)}`);
  const entry = model.versions.find((v) => v.version === version);
  if (!entry) throw new ApiError(404, "version_not_found", `${name} has no version ${version}`);
  const evaluation = entry.card.metrics?.site_evaluation;
  const production = model.aliases.production;
  const parts = [h("h1", {}, `Promote ${name} v${version}?`),
    h("p", {}, `Production now: v${production ?? "none"}. `, h("a", { href: `#/models/${name}` }, "model page"))];
  if (!evaluation) {
    parts.push(h("p", { class: "notice" }, "This version carries no held-out site evaluation (it was " +
      "registered, not fine-tuned here): the gate has nothing to judge it by."));
  } else {
    const gate = evaluation.gate;
    if (evaluation.production_version !== `${name}:${production}`) {
      parts.push(h("p", { class: "notice" }, `The evaluation compared with ${evaluation.production_version}; ` +
        `production is now v${production}.`));
    }
    if (gate) {
      parts.push(h("div", { class: "card", "data-testid": "gate" },
        h("strong", { class: gate.passed ? "ok" : "bad" }, gate.passed ? "Gate passed" : "Gate refuses"),
        `: ${gate.reason}`));
    }
    const cand = evaluation.candidate;
    const prod = evaluation.production || {};
    const labels = Object.keys(cand.dice);
    const rows = [
      { metric: "mean Dice", c: cand.mean_dice, p: prod.mean_dice },
      ...labels.map((l) => ({ metric: `Dice ${l}`, c: cand.dice[l], p: prod.dice?.[l] })),
      ...labels.map((l) => ({ metric: `|volume error| ${l} (mL)`, c: cand.volume_abs_error_ml?.[l],
        p: prod.volume_abs_error_ml?.[l], lower: true })),
    ];
    for (const key of ["ed_median", "es_median", "ed_max"]) {
      if (cand.thickness_agreement?.[key]) {
        rows.push({ metric: `thickness ${key.replace("_", " ")} bias (mm)`, c: cand.thickness_agreement[key].bias_mm,
          p: prod.thickness_agreement?.[key]?.bias_mm });
      }
    }
    if (cand.wmh) {
      for (const key of Object.keys(cand.wmh)) {
        rows.push({ metric: `lesion ${key}`, c: cand.wmh[key]?.mean, p: prod.wmh?.[key]?.mean });
      }
    }
    parts.push(h("h2", {}, `Held-out site cases (${evaluation.held_out_cases.length})`),
      table([
        { title: "metric", value: (r) => r.metric },
        { title: `candidate v${version}`, value: (r) => fmt(r.c, 4), num: true },
        { title: evaluation.production_version, value: (r) => fmt(r.p, 4), num: true },
        { title: "difference", value: (r) => (typeof r.c === "number" && typeof r.p === "number"
          ? diffCell(r.lower ? r.p - r.c : r.c - r.p) : "—"), num: true },
      ], rows, { "data-testid": "metrics" }));
    const paired = evaluation.paired;
    if (paired) {
      parts.push(h("h2", {}, "Per case (worst first)"),
        h("p", {}, `Paired difference in mean Dice: ${fmt(paired.mean_difference, 4)} ± ` +
          `${fmt(paired.sd_difference, 4)} (sd); candidate better on ${paired.better}, worse on ` +
          `${paired.worse}, tied on ${paired.tied}.`),
        table([
          { title: "case", value: (r) => r.case },
          { title: "candidate", value: (r) => fmt(r.candidate, 4), num: true },
          { title: "production", value: (r) => fmt(r.production, 4), num: true },
          { title: "difference", value: (r) => diffCell(r.difference), num: true },
        ], paired.cases, { "data-testid": "per-case" }));
    }
  }
  if (version === production) {
    parts.push(h("p", { class: "ok", "data-testid": "promoted" }, `v${version} is in production.`));
    return show(parts);
  }
  const reason = h("input", { type: "text", placeholder: "reason (kept in the audit log)",
    "data-testid": "promote-reason", size: 50, required: true });
  const status = h("div", { "data-testid": "promote-status" });
  const promote = async (force) => {
    try {
      await request(`/v1/models/${name}/promote`, { method: "POST",
        json: { version, reason: reason.value, force } });
      await promoteView(show, name, versionText);
    } catch (error) {
      fill(status, errorBox(error));
      if (error.status === 409 && !force) status.append(forceBox(promote));
    }
  };
  parts.push(h("h2", {}, "Decision"),
    h("form", { class: "inline", onsubmit: (event) => { event.preventDefault(); promote(false); } },
      reason, h("button", { type: "submit", "data-testid": "promote" }, "Promote to production")),
    status);
  show(parts);
}

/** Force is offered only after the gate refused, and needs a second, typed confirmation. */
function forceBox(promote) {
  const typed = h("input", { type: "text", placeholder: "type FORCE", "data-testid": "force-confirm" });
  const button = h("button", { class: "danger", disabled: true, "data-testid": "force",
    onclick: () => promote(true) }, "Force promotion");
  typed.addEventListener("input", () => { button.disabled = typed.value !== "FORCE"; });
  return h("div", { class: "card" },
    h("p", {}, "The gate refused this version on the held-out site cases. Promoting anyway is " +
      "recorded as forced in the audit log. To go on, type FORCE."), h("div", { class: "row" }, typed, button));
}

// ---------------------------------------------------------------- jobs
async function jobsView(show) {
  const [{ jobs }, { models }] = await Promise.all([request("/v1/jobs"), request("/v1/models")]);
  const list = h("div");
  const render = (items) => fill(list, table([
    { title: "job", value: (j) => h("a", { href: `#/jobs/${j.job_id}` }, j.job_id.slice(0, 8)) },
    { title: "state", value: (j) => stateBadge(j.state) },
    { title: "base", value: (j) => j.base },
    { title: "progress", value: (j) => progressText(j) },
    { title: "created", value: (j) => `${when(j.created_at)} by ${j.created_by}` },
    { title: "result", value: (j) => j.result?.ref || "—" },
  ], items, { "data-testid": "jobs" }));
  render(jobs);
  every(2000, async () => render((await request("/v1/jobs")).jobs));
  show(h("h1", {}, "Fine-tune jobs"), submitForm(models), h("h2", {}, "Jobs"), list);
}

function progressText(job) {
  const p = job.progress || {};
  if (job.state === "running" && p.epochs) {
    return `${p.stage || "training"} · epoch ${p.epoch}/${p.epochs}${p.eta_s ? ` · ~${Math.round(p.eta_s)} s left` : ""}`;
  }
  return job.state === "queued" ? "waiting for a worker" : (job.error || "");
}

function submitForm(models) {
  const file = h("input", { type: "file", name: "dataset", accept: ".zip", required: true, "data-testid": "dataset" });
  const base = h("select", { name: "base", "data-testid": "base" },
    models.map((m) => h("option", { value: m.name }, `${m.name} (production v${m.aliases.production})`)));
  const budget = h("select", { name: "budget", "data-testid": "budget" },
    ["", "quick", "standard", "thorough"].map((b) => h("option", { value: b }, b || "budget: explicit epochs")));
  const strategy = h("select", { name: "strategy" },
    ["all", "decoder", "head", "scratch"].map((s) => h("option", { value: s }, `fine-tune ${s}`)));
  const augment = h("select", { name: "augment", "data-testid": "augment" },
    [["site_shift", "augment: site shift"], ["light", "augment: light"],
     ["contrast", "augment: CT contrast only"], ["none", "no augmentation"]]
      .map(([value, text]) => h("option", { value }, text)));
  const epochs = h("input", { type: "text", name: "epochs", placeholder: "epochs", size: 6, "data-testid": "epochs" });
  const iterations = h("input", { type: "text", name: "iterations_per_epoch", placeholder: "iterations/epoch",
    size: 12, "data-testid": "iterations" });
  const auto = h("input", { type: "checkbox", name: "auto_promote" });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "data-testid": "upload-progress" });
  const status = h("div");
  const form = h("form", { class: "card", "data-testid": "submit-job", onsubmit: async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append("dataset", file.files[0]);
    data.append("base", base.value);
    data.append("strategy", strategy.value);
    if (budget.value) data.append("budget", budget.value);
    data.append("augment", augment.value);
    if (epochs.value) data.append("epochs", epochs.value);
    if (iterations.value) data.append("iterations_per_epoch", iterations.value);
    if (auto.checked) data.append("auto_promote", "true");
    bar.hidden = false;
    fill(status, "uploading…");
    try {
      const job = await upload("/v1/jobs", data, (f) => { bar.value = f; });
      location.hash = `#/jobs/${job.job_id}`;
    } catch (error) {
      bar.hidden = true;
      fill(status, errorBox(error));
    }
  } },
  h("strong", {}, "New job from a labelled dataset (MSD zip: dataset.json, imagesTr/, labelsTr/)"),
  h("div", { class: "row" }, file, base, strategy, budget, augment, epochs, iterations,
    h("label", {}, auto, "promote if the gate passes"), h("button", { type: "submit" }, "Submit")),
  bar, status);
  return form;
}

async function jobView(show, id) {
  const state = h("span");
  const summary = h("div", { class: "card" });
  const charts = h("div", { class: "grid" });
  const result = h("div");
  const log = h("pre", { class: "log", "data-testid": "log" });
  const cancel = h("button", { class: "danger", "data-testid": "cancel", onclick: async () => {
    cancel.disabled = true;
    await request(`/v1/jobs/${id}/cancel`, { method: "POST" }).catch((e) => fill(result, errorBox(e)));
  } }, "Cancel job");
  let offset = 0;
  const refresh = async () => {
    const job = await request(`/v1/jobs/${id}`);
    const p = job.progress || {};
    fill(state, stateBadge(job.state));
    cancel.hidden = !["queued", "running"].includes(job.state) || job.cancel_requested;
    const fraction = p.epochs ? p.epoch / p.epochs : 0;
    fill(summary, 
      h("div", { class: "row" }, h("progress", { max: 1, value: job.state === "succeeded" ? 1 : fraction,
        "data-testid": "job-progress" }), progressText(job)),
      h("div", {}, `base ${job.base} · strategy ${job.config.strategy} · ${job.config.epochs} epochs × ` +
        `${job.config.iterations_per_epoch} iterations · augment ${job.config.augment ?? "—"} · seed ${job.config.seed}` +
        (job.config.budget ? ` · budget ${job.config.budget}` : "")),
      p.estimate ? h("div", {}, `estimated training ${fmt(p.estimate.training_s, 1)} s on this device ` +
        `(${fmt(p.estimate.per_iteration_s, 3)} s per iteration)`) : null,
      job.error ? errorBox({ message: job.error, code: job.state }) : null);
    const losses = (p.losses || []).map((v, i) => [i + 1, v]);
    fill(charts, 
      lineChart([{ name: "training loss", points: losses, color: "#1565c0" }],
        { title: "Training loss", testid: "loss-chart" }),
      lineChart([{ name: "held-out mean Dice", points: p.val_mean_dice || [], color: "#2e7d32" }],
        { title: "Validation Dice", testid: "dice-chart", yMax: 1 }));
    if (job.result) {
      const t = job.result.training || {};
      const pp = (job.result.evaluation || {}).postprocessing;
      const [name, version] = job.result.ref.split(":");
      fill(result, h("div", { class: "card", "data-testid": "job-result" },
        h("div", {}, `Registered ${job.result.ref}. `, h("a", { href: `#/promote/${name}/${version}`,
          "data-testid": "review" }, "Review the evaluation and promote")),
        t.kept_epoch ? h("div", {}, `Kept epoch ${t.kept_epoch} (${t.kept_because}); stopped by ${t.stopped_by}.`) : null,
        t.estimate ? h("div", {}, `Training estimated ${fmt(t.estimate.training_s, 1)} s, took ` +
          `${fmt(t.actual_training_s, 1)} s.`) : null,
        pp ? h("div", { "data-testid": "postprocessing" }, `Lesion components kept from ` +
          `${pp.min_component_ml} mL (${pp.because}).`) : null,
        h("div", {}, job.result.promoted ? "Promoted to production." : job.result.promotion || "")));
    }
    const chunk = await request(`/v1/jobs/${id}/logs?offset=${offset}`, { as: "text" });
    if (chunk.text) {
      log.append(chunk.text);
      log.scrollTop = log.scrollHeight;
    }
    offset = Number(chunk.headers.get("X-Log-Offset") || offset);
    return job;
  };
  show(h("h1", {}, `Job ${id.slice(0, 8)} `, state), summary, cancel, result, charts, h("h2", {}, "Log"), log);
  const job = await refresh();
  if (!["succeeded", "failed", "cancelled"].includes(job.state)) {
    every(1500, async () => {
      const now = await refresh().catch(() => null);
      if (now && ["succeeded", "failed", "cancelled"].includes(now.state)) timers.forEach(clearInterval);
    });
  }
}

// ---------------------------------------------------------------- results
async function resultsView(show) {
  const { results } = await request("/v1/results");
  const file = h("input", { type: "file", name: "file", accept: ".nii,.gz,.zip", required: true, "data-testid": "analyse-file" });
  const task = h("select", { "data-testid": "analyse-task" },
    [["thickness", "LV wall thickness"], ["segment", "segment"], ["lesion-volume", "lesion volume"]]
      .map(([value, text]) => h("option", { value }, text)));
  const bar = h("progress", { max: 1, value: 0, hidden: true });
  const status = h("div");
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append("file", file.files[0]);
    bar.hidden = false;
    fill(status, "uploading…");
    try {
      const body = await upload(`/v1/${task.value}`, data, (f) => {
        bar.value = f;
        if (f >= 1) fill(status, "analysing…");
      });
      location.hash = `#/results/${body.result_id}`;
    } catch (error) {
      bar.hidden = true;
      fill(status, errorBox(error));
    }
  } }, h("strong", {}, "Analyse a file (NIfTI, or a zip of one DICOM series / study)"),
  h("div", { class: "row" }, file, task, h("button", { type: "submit" }, "Analyse")), bar, status);
  show(h("h1", {}, "Results"), form, table([
    { title: "result", value: (r) => h("a", { href: `#/results/${r.result_id}` }, r.result_id.slice(0, 8)) },
    { title: "kind", value: (r) => r.kind },
    { title: "model", value: (r) => (r.model ? `${r.model.name} v${r.model.version}` : "mask input") },
    { title: "when", value: (r) => when(r.created_at) },
    { title: "headline", value: (r) => headline(r) },
  ], results, { "data-testid": "results" }));
}

function headline(r) {
  if (r.ed_median_mm !== undefined) return `ED median wall ${fmt(r.ed_median_mm, 1)} mm`;
  if (r.total_ml !== undefined) return `${r.count} lesions, ${fmt(r.total_ml, 2)} mL`;
  if (r.labels) return Object.entries(r.labels).map(([k, v]) => `${k} ${fmt(v.volume_ml, 1)} mL`).join(", ");
  return "";
}

async function blobImage(path, attrs) {
  const img = h("img", attrs);
  try {
    img.src = URL.createObjectURL(await request(path, { as: "blob" }));
  } catch (error) {
    return errorBox(error);
  }
  return img;
}

async function resultView(show, id) {
  const r = await request(`/v1/results/${id}`);
  const outputs = r.outputs || {};
  const parts = [h("h1", {}, `Result ${id.slice(0, 8)}`),
    h("p", {}, `${r.model ? `${r.model.name} v${r.model.version}` : "mask input"} · ${r.backend || ""} · ` +
      `input ${r.input?.shape?.join("×") || ""} at ${r.input?.spacing_mm?.map((v) => fmt(v, 2)).join("×") || "?"} mm`)];
  if (r.quality) {
    parts.push(h("div", { class: r.quality.flags?.length ? "notice" : "card", "data-testid": "quality" },
      `Quality score ${fmt(r.quality.score, 2)}`, r.quality.flags?.length ? `: ${r.quality.flags.join("; ")}` : ": no flags"));
  }
  const side = h("div");
  const canvasBox = h("div");
  parts.push(h("div", { class: "viewer" }, canvasBox, side));
  if (outputs.image?.available) {
    const canvas = h("canvas", { id: "niivue", "data-testid": "viewer" });
    const controls = h("div", { class: "row" });
    const note = h("div", { class: "muted", "data-testid": "viewer-status" }, "loading the image…");
    canvasBox.append(h("div", { id: "niivue-box" }, canvas), controls, note);
    const viewer = new ResultViewer(canvas);
    const overlay = h("select", { "data-testid": "overlay" }, h("option", { value: "mask" }, "mask overlay"),
      outputs.thickness?.available ? h("option", { value: "thickness" }, "thickness map (mm)") : null);
    const load = async () => {
      note.textContent = "loading the image…";
      try {
        const frames = await viewer.open(r, overlay.value);
        fill(frame, ...[...Array(frames).keys()].map((i) => h("option", { value: i },
          phaseName(r, i))));
        frame.hidden = frames < 2;
        note.textContent = "shown";
        canvas.dataset.loaded = overlay.value;
      } catch (error) {
        fill(note, errorBox({ message: `the viewer could not draw the result: ${error.message}` }));
      }
    };
    const frame = h("select", { "data-testid": "frame", hidden: true,
      onchange: () => viewer.setFrame(Number(frame.value)) });
    overlay.addEventListener("change", load);
    controls.append(overlay, frame);
    setTimeout(load, 0);
  } else {
    canvasBox.append(h("p", { class: "notice" }, `No image to show: ${outputs.image?.reason || "not stored with this result"}`));
  }
  if (outputs.bullseye?.available) {
    const pick = h("select", { "data-testid": "bullseye-value" },
      [["phase=ed", "ED thickness"], ["phase=es", "ES thickness"], ["value=thickening", "thickening"]]
        .map(([value, text]) => h("option", { value }, text)));
    const holder = h("div");
    const draw = async () => fill(holder, await blobImage(`/v1/results/${id}/bullseye.svg?${pick.value}`,
      { class: "bullseye", alt: "AHA bullseye", "data-testid": "bullseye" }));
    pick.addEventListener("change", draw);
    side.append(h("h2", {}, "AHA 17-segment bullseye"), pick, holder);
    await draw();
  }
  side.append(h("h2", {}, "Downloads"), h("ul", {}, Object.entries(outputs).map(([name, o]) => h("li", {},
    o.available ? h("a", { href: "#", onclick: (event) => { event.preventDefault();
      download(o.url, `${id.slice(0, 8)}-${name}${extension(o.media_type)}`).catch((e) => side.append(errorBox(e))); } }, name)
      : h("span", { class: "muted" }, `${name}: ${o.reason}`)))));
  parts.push(...measurements(r));
  parts.push(h("details", {}, h("summary", {}, "Provenance"), h("pre", {}, JSON.stringify(r.provenance, null, 2))));
  show(parts);
}

function phaseName(r, index) {
  const phase = (r.phases || []).find((p) => p.index === index);
  return phase?.role ? `phase ${index} (${phase.role})` : `phase ${index}`;
}

function extension(media) {
  return { "application/gzip": ".nii.gz", "application/dicom": ".dcm", "application/json": ".json",
    "image/png": ".png", "image/svg+xml": ".svg" }[media] || "";
}

function measurements(r) {
  const out = [];
  if (r.labels) {
    out.push(h("h2", {}, "Volumes"), table([
      { title: "label", value: (row) => row[0] },
      { title: "volume (mL)", value: (row) => fmt(row[1].volume_ml, 2), num: true },
    ], Object.entries(r.labels)));
  }
  if (r.phases) {
    out.push(h("h2", {}, `Wall thickness (thickening ${fmt(r.thickening_pct, 1)} %)`), table([
      { title: "phase", value: (p) => `${p.index}${p.role ? ` (${p.role})` : ""}` },
      ...["median", "mean", "p95", "max"].map((k) => ({ title: `${k} (mm)`, value: (p) => fmt(p.thickness_mm?.[k], 2), num: true })),
      { title: "myocardium (mL)", value: (p) => fmt(p.volumes_ml?.myocardium, 1), num: true },
    ], r.phases, { "data-testid": "thickness" }));
  }
  if (r.segments) {
    out.push(h("h2", {}, "AHA segments"), table([
      { title: "segment", value: (s) => `${s.id} ${s.name}` },
      { title: "ED median (mm)", value: (s) => fmt(s.ed?.median, 2), num: true },
      { title: "ED max (mm)", value: (s) => fmt(s.ed?.max, 2), num: true },
      { title: "ES median (mm)", value: (s) => fmt(s.es?.median, 2), num: true },
      { title: "thickening (%)", value: (s) => fmt(s.thickening_pct, 1), num: true },
    ], r.segments, { "data-testid": "segments" }));
  }
  if (r.lesions) {
    out.push(h("h2", {}, `Lesions: ${r.count}, ${fmt(r.total_ml, 2)} mL`), table([
      { title: "lesion", value: (l) => l.id, num: true },
      { title: "volume (mL)", value: (l) => fmt(l.volume_ml, 3), num: true },
      { title: "centroid (mm)", value: (l) => l.centroid_mm.map((v) => fmt(v, 1)).join(", ") },
    ], r.lesions.slice(0, 100), { "data-testid": "lesions" }));
  }
  return out;
}

// ---------------------------------------------------------------- PACS and audit
async function pacsView(show) {
  const [series, analyses, deliveries] = await Promise.all([
    request("/v1/pacs/series"), request("/v1/pacs/analyses"), request("/v1/pacs/deliveries")]);
  const status = h("div");
  const ops = principal.roles.includes("ops");
  show(h("h1", {}, "PACS"), status,
    h("h2", {}, "Deliveries"), table([
      { title: "delivery", value: (d) => d.id.slice(0, 8) },
      { title: "destination", value: (d) => d.destination },
      { title: "state", value: (d) => stateBadge(d.state) },
      { title: "attempts", value: (d) => d.attempts, num: true },
      { title: "last error", value: (d) => d.last_error || "—" },
      { title: "", value: (d) => (ops && d.state === "failed" ? h("button", { class: "secondary",
        onclick: async () => {
          try {
            await request(`/v1/pacs/deliveries/${d.id}/retry`, { method: "POST" });
            await pacsView(show);
          } catch (error) { fill(status, errorBox(error)); }
        } }, "Retry now") : "") },
    ], deliveries.deliveries, { "data-testid": "deliveries" }),
    h("h2", {}, "Analyses"), table([
      { title: "analysis", value: (a) => a.id.slice(0, 8) },
      { title: "state", value: (a) => stateBadge(a.state) },
      { title: "route / model", value: (a) => `${a.route} / ${a.model}` },
      { title: "series", value: (a) => a.series_uids.length, num: true },
      { title: "finished", value: (a) => when(a.finished_at) },
      { title: "error", value: (a) => a.error || "—" },
    ], analyses.analyses, { "data-testid": "analyses" }),
    h("h2", {}, "Received series"), table([
      { title: "modality", value: (s) => s.modality || "—" },
      { title: "description", value: (s) => s.series_description || "—" },
      { title: "instances", value: (s) => s.instances, num: true },
      { title: "state", value: (s) => stateBadge(s.state) },
      { title: "route", value: (s) => s.route || "—" },
      { title: "received", value: (s) => when(s.received_at) },
    ], series.series, { "data-testid": "series" }));
}

async function auditView(show) {
  const { entries } = await request("/v1/audit");
  show(h("h1", {}, "Audit log"), table([
    { title: "when", value: (e) => when(e.at) },
    { title: "who", value: (e) => e.actor },
    { title: "action", value: (e) => e.action },
    { title: "model", value: (e) => e.name || "—" },
    { title: "change", value: (e) => (e.alias ? `${e.alias}: ${e.from_version ?? "—"} → ${e.to_version ?? "—"}`
      : e.to_version ? `v${e.to_version}` : "—") },
    { title: "reason", value: (e) => e.reason || "" },
  ], entries, { "data-testid": "audit" }));
}

start();
