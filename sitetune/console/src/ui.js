// Small DOM helpers: elements built with textContent (never innerHTML from data), tables,
// line charts and the model lineage graph as SVG.

const SVG = "http://www.w3.org/2000/svg";

/** h("td", {class: "num"}, "1.2") — attributes, then children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Replace `el`'s children (null / false / undefined skipped, strings as text). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function stateBadge(state) {
  return h("span", { class: `state ${state}`, "data-testid": "state" }, state);
}

/** A table: `columns` [{title, value(row) -> node|string, num?}] over `rows`. */
export function table(columns, rows, attrs = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", {}, c.title)));
  const body = rows.map((row) =>
    h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row)))),
  );
  if (!rows.length) {
    body.push(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none")));
  }
  return h("table", attrs, h("thead", {}, head), h("tbody", {}, body));
}

export function errorBox(error) {
  const code = error.code ? ` (${error.code})` : "";
  return h("div", { class: "error", role: "alert", "data-testid": "error" }, `${error.message}${code}`);
}

/** A line chart of `series` [{name, points: [[x, y]...], color}] with axis ranges and labels. */
export function lineChart(series, { title, xLabel = "epoch", yLabel = "", width = 440, height = 220,
  yMin, yMax, testid } = {}) {
  const pad = { left: 48, right: 12, top: 22, bottom: 32 };
  const all = series.flatMap((one) => one.points);
  const svg = s("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": title, "data-testid": testid || "chart" });
  svg.append(s("text", { x: pad.left, y: 14 }, title));
  if (!all.length) {
    svg.append(s("text", { x: width / 2 - 40, y: height / 2 }, "no points yet"));
    return svg;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = yMin ?? Math.min(...ys);
  let y1 = yMax ?? Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  svg.append(s("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right,
    y2: height - pad.bottom, stroke: "#98a2b3" }));
  svg.append(s("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom,
    stroke: "#98a2b3" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    svg.append(s("text", { x: 4, y: Y(y) + 4 }, y.toPrecision(3)));
  }
  svg.append(s("text", { x: pad.left, y: height - 8 }, `${xLabel} ${x0}`));
  svg.append(s("text", { x: width - pad.right - 30, y: height - 8 }, String(x1)));
  if (yLabel) svg.append(s("text", { x: width - pad.right - 120, y: 14 }, yLabel));
  series.forEach((one, i) => {
    const path = one.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`);
    svg.append(s("path", { d: path.join(" "), fill: "none", stroke: one.color, "stroke-width": 2 }));
    for (const p of one.points) {
      svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: one.color }));
    }
    svg.append(s("text", { x: width - pad.right - 150, y: pad.top + 14 * (i + 1), fill: one.color },
      one.name));
  });
  return svg;
}

/** The lineage of a model's versions: a node per version, an arrow from parent to child,
 * production outlined; `href(version)` links each node. */
export function lineage(model, href) {
  const versions = model.versions;
  const depth = new Map();
  const byRef = new Map(versions.map((v) => [`${model.name}:${v.version}`, v]));
  const level = (v) => {
    if (depth.has(v.version)) return depth.get(v.version);
    const parent = v.parent && byRef.get(v.parent);
    const d = parent && parent !== v ? level(parent) + 1 : 0;
    depth.set(v.version, d);
    return d;
  };
  versions.forEach(level);
  const rows = new Map();
  const place = new Map();
  for (const v of versions) {
    const d = depth.get(v.version);
    const row = rows.get(d) || 0;
    rows.set(d, row + 1);
    place.set(v.version, [40 + d * 120, 30 + row * 46]);
  }
  const width = 80 + Math.max(...[...depth.values()], 0) * 120 + 80;
  const height = 40 + Math.max(...rows.values(), 1) * 46;
  const svg = s("svg", { class: "chart", width, height, "data-testid": "lineage",
    "aria-label": "lineage" });
  const aliases = model.aliases || {};
  for (const v of versions) {
    const parent = v.parent && byRef.get(v.parent);
    if (!parent) continue;
    const [x1, y1] = place.get(parent.version);
    const [x2, y2] = place.get(v.version);
    svg.append(s("line", { x1: x1 + 34, y1, x2: x2 - 34, y2, stroke: "#98a2b3", "stroke-width": 2 }));
  }
  for (const v of versions) {
    const [x, y] = place.get(v.version);
    const names = Object.entries(aliases).filter(([, n]) => n === v.version).map(([a]) => a);
    const production = names.includes("production");
    const link = s("a", { href: href(v) });
    link.append(s("rect", { x: x - 34, y: y - 14, width: 68, height: 28, rx: 6,
      fill: production ? "#e3f4e4" : "#fff", stroke: production ? "#2e7d32" : "#667085",
      "stroke-width": production ? 2.5 : 1 }));
    link.append(s("text", { x: x - 10, y: y + 4, fill: "#1d2430" }, `v${v.version}`));
    if (names.length) link.append(s("text", { x: x - 34, y: y + 26 }, names.join(", ")));
    svg.append(link);
  }
  return svg;
}
