"""The differential test machine (issue 8): random valid Nengo networks, checked
against nengo.Simulator, finite differences, exports and round trips.

`strategies` generates the networks (as plain data, with a ``build()`` and a
``repro()``), `properties` holds the checks, `test_machine` is the CI budget and
`test_pinned` the failures found so far. See docs/testing.md.
"""
