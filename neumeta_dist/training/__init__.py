"""Training: a run's shared context (context.py), the teacher (teacher.py), the stage loop
(loop.py) and what it leans on (checkpointer, selection, EMA, execution, probes, logging,
trackers, process set-up), the trained run and its evaluation (trained.py), and the pipeline
that runs stage 0 .. n then evaluates (pipeline.py)."""
