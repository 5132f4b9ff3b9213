"""Everything about several processes, under Accelerate:

- `accelerator.py`: the one Accelerator (gloo on CPU);
- `data_parallel.py`: DDP / DeepSpeed ZeRO-2/3 wiring of the INR and the teacher (gathering,
  whole state dicts, clipping, the run's parallel mode);
- `coordinate_parallel.py`: how the INR call is spread over ranks (replicated, or each rank
  its slice of the coordinate table, all-gathered);
- `preemption.py`: SLURM's signals turned into a checkpoint at a step boundary;
- `universal.py`: a ZeRO checkpoint resumed on another number of ranks (DeepSpeed's universal
  checkpoint).

The data pipeline's per-rank splitting stays with the data (`data/`).
"""
