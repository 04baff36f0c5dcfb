// For each element matching `selector`: does it show drawn data? svg (plotly): a trace path or bar with a
// non-trivial outline; svg (Vega): a line, rect or symbol mark with an outline; canvas or img: a saturated (coloured, not grey/white/black) pixel.
(selector) => {
  const saturated = (ctx, w, h) => {
    if (!w || !h) return false;
    const d = ctx.getImageData(0, 0, w, h).data;
    for (let i = 0; i < d.length; i += 4 * 7) {
      const r = d[i], g = d[i + 1], b = d[i + 2], a = d[i + 3];
      if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 60) return true;
    }
    return false;
  };
  const drawn = (box) => {
    const r = box.getBoundingClientRect();
    const visible = r.width > 0 && r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
    const paths = [...box.querySelectorAll(".scatterlayer path.js-line, .barlayer path, .scatterlayer path.point, " +
      "g.mark-line path, g.mark-rect path, g.mark-symbol path")];
    if (paths.some((p) => (p.getAttribute("d") || "").length > 8)) return { visible, data: true };
    for (const c of box.querySelectorAll("canvas")) {
      try {
        if (saturated(c.getContext("2d"), c.width, c.height)) return { visible, data: true };
      } catch (e) { /* a webgl canvas: not ours */ }
    }
    for (const img of box.querySelectorAll("img")) {
      if (!img.complete || !img.naturalWidth) continue;
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      if (saturated(ctx, c.width, c.height)) return { visible, data: true };
    }
    return { visible, data: false };
  };
  return [...document.querySelectorAll(selector)].map(drawn);
}
