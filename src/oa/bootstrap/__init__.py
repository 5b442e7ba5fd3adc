"""The composition root: every service built from settings passed in.

`oa run`, `oa serve ...`, `oa khala serve`, the benchmarks and the test fixtures all build
their servers here, so what a test serves is what the CLI serves. Settings are read from
the environment only at those entry points (`RuntimeSettings.from_env`,
`ControlSettings.from_env`, `KhalaSettings.from_env`) and travel as arguments from there;
nothing here reads or writes `os.environ`.

It sits above the rooms of DESIGN.md (it may import runtime, control and Khala; none of
them imports it), so a Khala service still never sees runtime or control internals.

* `services`: the ASGI apps and the projector.
* `servers`: uvicorn on uvloop, several servers on one loop, SO_REUSEPORT.
* `khala_processes`: Khala in processes of its own (one port, N processes), supervised.
"""
