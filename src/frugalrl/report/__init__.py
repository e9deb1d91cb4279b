"""Run reports: plots and a markdown summary of one training run directory."""

from frugalrl.report.run_report import write_run_report

__all__ = ["write_run_report"]
