"""alignpipe: RLHF as one managed computation graph."""

__version__ = "0.1.0"

from alignpipe.pipeline.stagedef import InputDef, stage  # noqa: E402

__all__ = ["InputDef", "stage", "__version__"]
