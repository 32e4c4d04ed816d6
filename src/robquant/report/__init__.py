"""Reports: the paper's tables and figures from a study's store, with seeds, confidence intervals,
trend labels, the paper's numbers beside ours, cost and a Pareto view."""

from robquant.report.build import FORMATS, write_report
from robquant.report.records import Row, collect
from robquant.report.stats import t_interval, trend_label

__all__ = ["FORMATS", "Row", "collect", "t_interval", "trend_label", "write_report"]
