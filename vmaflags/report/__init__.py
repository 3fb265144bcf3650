"""`vmaflags report`: the design-discussion artifact, from live results.

`collect` runs what the report shows -- the theorem catalogue, the concurrency theorems, this
machine's conformance run and the live races, and the test VMs asked for -- and returns one
JSON-able dict (written beside the report as results.json, so `--from` can render it again);
`render` turns it into report.html (self-contained: inline SVG and CSS), report.md (with the
diagrams as SVG files) and report.txt (a mail reply: 80 columns, no tabs).  Nothing in it is
typed by hand that the model or a result can produce: the state machines are computed from
the model (diagram.py), the tables and traces come from the results, the list of what is not
modelled from model/README.md.
"""
