"""Other frameworks' runs in, our tables out: the TRL callback (:mod:`.trl`) and the ingest of
TRL / verl / JSONL trajectory logs (:mod:`.ingest`). Each imports its framework lazily.

May import ``core``, ``states`` and ``probes``; never ``preflight``, ``report`` or ``cli``.
"""
