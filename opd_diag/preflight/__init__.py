"""Pre-flight: probes on a bounded budget, turned into GO / CAUTION / NO-GO with the recovery.

Owns budgets (:mod:`.budgets`), the pure decision rules and thresholds (:mod:`.rules`), the
truncation guard (:mod:`.truncation`: CAUTION when > 10% of rollouts hit the cap), the
orchestration (:mod:`.run`) and the teacher ranking (:mod:`.rank`). May import ``core``, ``tasks``, ``states`` and ``probes``; never
``train``, ``report`` or ``cli``.

>>> import opd_diag as od
>>> # v = od.run_preflight(od.load_pair(s, t), od.load_prompts(p), "runs/pf", verifier=...)
>>> # print(v.render()); v.exit_code   # 0 GO, 3 CAUTION, 4 NO-GO
"""

from .budgets import BUDGETS, PreflightConfig
from .rank import Ranking, rank_teachers
from .rank_check import check_ranking
from .rules import EXIT_CODES, VERDICTS, Thresholds, Verdict, decide, overall
from .run import load_verdict, run_preflight

__all__ = ["BUDGETS", "EXIT_CODES", "VERDICTS", "PreflightConfig", "Thresholds", "Verdict",
           "Ranking", "check_ranking", "decide", "load_verdict", "overall", "rank_teachers", "run_preflight"]
