"""Human preference labeling: the `human` judge's page, its SQLite store, agreement, and other tools' formats.

    db.py         judgments in SQLite (the stage's work dir): durable before acknowledged, one per annotator and pair
    agreement.py  majority aggregation (the disagreement policy), Fleiss' and Cohen's kappa: pure functions
    app.py        the page (FastAPI): tokens, sessions, CSRF, size limits; templates/ and static/ are package data
    server.py     uvicorn in a thread, bound to 127.0.0.1 unless told otherwise
    judge.py      HumanJudge: the label stage's `judge: human`, serving the page until labeling is done
    interop.py    Label Studio and Argilla import/export formats
    cli.py        `alignpipe label serve|invite|export|import|status`

FastAPI and uvicorn are imported only by app.py and server.py (`pip install 'alignpipe[label]'`).
"""
