"""Bounds that hold for every input, not only the ones an attack tried: per-layer Lipschitz upper bounds
(the paper's Table 5, `lipschitz`), and the certified radii and exact minimal distortions that bracket an
attack's answer from below."""
