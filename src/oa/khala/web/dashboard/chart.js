// A small hand-drawn SVG line chart (no library): series of {t, v} points over time.
// It draws in the box's own pixel size (so it fills the box at any width), with "nice"
// ticks (integers for counts) and the legend above the plot, clear of the gridlines.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/** Ticks from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten (whole numbers when `integer`). */
export function niceTicks(max, { integer = false, count = 4 } = {}) {
  const top = Math.max(max, integer ? 1 : 1e-9);
  let step = 10 ** Math.floor(Math.log10(top / count));
  for (const m of [1, 2, 5, 10]) {
    if (top / (step * m) <= count) { step *= m; break; }
  }
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = 0; v < top + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function label(v, unit) {
  const s = Number.isInteger(v) ? String(v) : v.toFixed(Math.max(0, 2 - Math.floor(Math.log10(Math.abs(v) || 1))));
  return `${s}${unit}`;
}

/** Draw `series` ([{name, color, points:[{t, v}]}]) into `svg`; v may be null (a gap). */
export function lineChart(svg, series, { unit = "", title = "", integer = false, empty = "no data yet" } = {}) {
  const W = Math.max(200, Math.round(svg.clientWidth || 600)), H = Math.max(120, Math.round(svg.clientHeight || 180));
  const L = 44, R = 10, T = 26, B = 20;
  // Redraw when the box changes size (a rotated phone, a resized window) so it keeps filling it.
  svg._redraw = () => lineChart(svg, series, { unit, title, integer, empty });
  if (!svg._observer && typeof ResizeObserver === "function") {
    let width = W;
    svg._observer = new ResizeObserver(() => {
      if (Math.round(svg.clientWidth) !== width) { width = Math.round(svg.clientWidth); svg._redraw(); }
    });
    svg._observer.observe(svg);
  }
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  svg.replaceChildren();
  const pts = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  if (!pts.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#59636e", "font-size": 13 }, empty));
    return;
  }
  const t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t), t0 + 1);
  const ticks = niceTicks(Math.max(...pts.map((p) => p.v)), { integer });
  const vmax = ticks[ticks.length - 1] || 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  for (const v of ticks) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#d1d9e0" }));
    svg.append(el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#59636e", class: "tick" },
      label(v, unit)));
  }
  svg.append(el("text", { x: W - R, y: H - 4, "text-anchor": "end", "font-size": 10, fill: "#59636e" },
    `last ${Math.round((t1 - t0) / 1000)} s`));
  series.forEach((s, i) => {
    let d = "";
    let pen = false;
    for (const p of s.points) {
      if (p.v === null || p.v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
      pen = true;
    }
    svg.append(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2 }));
    svg.append(el("text", { x: L + i * 220, y: 13, "font-size": 11, fill: s.color, class: "legend" }, s.name));
  });
}
