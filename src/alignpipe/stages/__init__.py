"""Built-in stage types: name -> module. Each module defines `STAGE` (a StageDef) and imports torch lazily."""

BUILTINS: dict[str, str] = {
    "example.corpus": "alignpipe.stages.example",
    "example.count": "alignpipe.stages.example_count",
}
