"""Evaluation: which images are attacked and how results are judged, stored and compared.

`protocol` chooses the images (one fingerprinted rule per evaluation), `leaderboard` stores every run in
SQLite and answers the attack x model matrices, `sweep` runs grids of idempotent tasks on Ray, `validate`
is the prediction report behind the Validate page (how small a change flips this one prediction),
`indicators` flags attacks that silently failed, and `audit` runs one attack with every indicator to say
whether a robustness number can be trusted.
"""
