"""What made each artefact: provenance (commit, command, host), the stage records
(lineage.py), the append-only evaluation records (evaluations.py) and the keys each one scopes
(scopes.py). Torch-free."""
