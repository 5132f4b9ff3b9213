"""Measuring a network family: accuracy per split (accuracy.py), the width sweep (sweep.py)
and its stored recalibration (calibration.py), parameters and MACs (budget.py), the results
table and plots (results.py, report.py), export (export.py) and the evidence protocol's table
(protocol.py). Nothing here trains."""
