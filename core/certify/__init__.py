"""Bounds that hold for every input of a ball, not only the points an attack tried.

`bounds` propagates IBP, CROWN and alpha-CROWN through a zoo model (lower bounds on every margin, certified
radii by bisection); `exact` finds the exact minimal distortion where a solver can prove it (LP and QP on
linear models, Tjeng et al.'s MILP on ReLU networks, a bracket on timeout); `bracket` puts certified, exact
and the best attack side by side per image (`intriguing certify`); `training` is the IBP loss of the
certifiably trained zoo model; `lipschitz` the paper's per-layer Lipschitz bounds (Table 5).
"""
