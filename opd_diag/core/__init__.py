"""What every stage shares: the run-directory contract (:mod:`.runs`), model loading and the
tokenizer checks (:mod:`.models`), the pure divergence math (:mod:`.divergences`; a sparse teacher's bounds:
:mod:`.sparse`), prompt files
(:mod:`.prompts`) and the error type (:mod:`.errors`).

Imports nothing else from ``opd_diag``: every other stage may import ``core``, never the reverse.
"""
