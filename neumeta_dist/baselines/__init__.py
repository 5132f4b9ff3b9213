"""The baselines the INR is measured against: the universally slimmable network
(slimmable.py) and individually trained networks per width (individual.py)."""
