"""`pagedlab validate`: the simulator against published measurements and papers' results.

One module per case (`ops`, `orca`, `sharing`, `waste`, `sarathi`, `host`), each returning `CheckResult`s
(`case.py`) with source, setting, published band, our value and verdict; `runner.py` runs them and writes
validation.md / validation.csv / figures; `cli.py` is the subcommand. Nothing here is fitted on these data:
a check whose number supplied a model constant says so (`used_for_fitting`). See docs/validation.md.
"""
