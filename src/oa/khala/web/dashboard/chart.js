// A small hand-drawn SVG line chart (no library): series of {t, v} points over time.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/** Draw `series` ([{name, color, points:[{t, v}]}]) into `svg`; v may be null (a gap). */
export function lineChart(svg, series, { unit = "", title = "" } = {}) {
  const W = 600, H = 180, L = 44, R = 8, T = 14, B = 20;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  svg.replaceChildren();
  const pts = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  if (!pts.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#59636e" }, "no data yet"));
    return;
  }
  const t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t), t0 + 1);
  const vmax = Math.max(1, ...pts.map((p) => p.v)) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    const v = vmax * f;
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#d1d9e0" }));
    svg.append(el("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#59636e" },
      `${v < 10 ? v.toFixed(1) : Math.round(v)}${unit}`));
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
    svg.append(el("text", { x: L + 6 + i * 170, y: 11, "font-size": 11, fill: s.color }, s.name));
  });
}
