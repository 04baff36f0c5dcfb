"""Pictures and figures: every image the pages, the report and the commands draw. `pictures` turns
tensors into enlarged, never blurred arrays; `grid` lays top-k sets side by side; `figures` builds the
slide-ready matplotlib figures (Figure 5 panel, unit grids, transfer heatmaps) and exports them."""
