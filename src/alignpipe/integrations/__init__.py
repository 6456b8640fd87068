"""The store talking to the versioning tools teams already use. None of them is a dependency of the core.

- `artifact`: a model artifact as the integrations see it: its role (πSFT, Rφ, πRLHF...), HF task, lineage ids
- `modelcard`: the README.md model card of a model artifact (what it is, data, stages, metrics, lineage)
- `gitlfs`: `alignpipe publish REF --git DIR` — a plain HF model directory committed with Git LFS
- `mlflow`: tracking (one parent run per pipeline run, one nested run per stage) and the model registry
- `dvc`: `alignpipe push/pull REF --dvc REPO` — artifact directories versioned in a DVC repo and its remotes
- `cli`: the commands above, registered on the main CLI

Each module imports its tool (mlflow, the git and dvc executables) inside the functions that need it; a missing
tool is a one-line UserError with the install command.
"""
