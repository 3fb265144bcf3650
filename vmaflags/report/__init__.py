"""`vmaflags report`: the design-discussion artifact, from live and saved results.

`collect` runs what the report shows -- the theorem catalogue, the concurrency theorems, this
machine's conformance and live races, the test VMs asked for -- and `saved` reads the JSON of
earlier runs (prove, conform, vm run, vm matrix, vm criu, stress); together one JSON-able
dict, written beside the report as results.json so that `--from` renders it again.  `render`
turns it into report.html (self-contained), report.md and report.txt (80 columns, for mail).
Nothing in it is typed by hand that the model or a result can produce: the state machines
(diagram.py) and the restore timelines (timeline.py) are computed from the model and
proofs/protocols.py, tables and traces come from the results, what is not modelled from
model/README.md and protocols.py.  README.md in this folder describes the report.
"""
