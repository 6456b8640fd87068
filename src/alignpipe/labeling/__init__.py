"""Preference labeling beyond a scoring function: people on a page (the `human` judge), and LLM judges.

    db.py         judgments in SQLite (the stage's work dir): durable before acknowledged, one per annotator and pair
    agreement.py  majority aggregation (the disagreement policy), Fleiss' and Cohen's kappa: pure functions
    app.py        the page (FastAPI): tokens, sessions, CSRF, size limits; templates/ and static/ are package data
    server.py     uvicorn in a thread, bound to 127.0.0.1 unless told otherwise
    judge.py      HumanJudge: the label stage's `judge: human`, serving the page until labeling is done
    client.py     PageClient: the page's JSON API over HTTP, for scripts
    interop.py    Label Studio and Argilla import/export formats
    cli.py        `alignpipe label invite|serve|status|finish|export|import`
    params.py     the label stage's `human:`, `llm:` and `openai:` params
    llm_judge.py  `judge: llm`: a local causal LM's P(A) vs P(B), both orders averaged
    openai_judge.py `judge: openai`: an OpenAI-compatible chat-completions endpoint (stdlib HTTP)

FastAPI and uvicorn are imported only by app.py and server.py (`pip install 'alignpipe[label]'`), torch and
transformers only by llm_judge.py.
"""
