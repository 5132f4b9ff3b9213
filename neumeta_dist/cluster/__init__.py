"""SLURM: the cluster profile and job parameters (slurm.py), the code snapshot a chain runs
(snapshot.py), and the chain of dependent stage jobs submitted through Submitit (submit.py).
Torch-free: it runs on login nodes."""
