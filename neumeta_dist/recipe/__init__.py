"""The training recipe that makes the whole network metamorphic: the block-wise stage plan
(stages.py), the INR's initialisation (inr_init.py), the losses (losses.py), the widths a step
trains (widths.py) and the per-width batch-norm recalibration (recalib.py)."""
