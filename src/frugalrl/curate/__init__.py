"""Dataset curation: ``frugalrl curate CONFIG.yaml`` runs named stages (load, answers, dedup,
decontaminate, difficulty, mix) and writes the dataset with a report of what was dropped and why.
"""

from frugalrl.curate.config import CurateConfig, load_curate_config
from frugalrl.curate.pipeline import curate, run_curation, summary_lines
from frugalrl.curate.stage import CURATION_STAGES, Dropped, StageContext, StageResult

__all__ = [
    "CURATION_STAGES",
    "CurateConfig",
    "Dropped",
    "StageContext",
    "StageResult",
    "curate",
    "load_curate_config",
    "run_curation",
    "summary_lines",
]
