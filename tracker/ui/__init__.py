"""`tracker ui`: a read-only web UI (Starlette, Jinja2, uPlot) on the run store.

Imported only by the `ui` command, so the other commands never load starlette, uvicorn or jinja2.
"""
