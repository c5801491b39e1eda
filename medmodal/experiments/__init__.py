"""Experiments: runs of the lower layers composed into studies (calibration, benchmark grids,
transfer, site transfer). Nothing below imports this package."""

__all__ = [
    "benchmark",
    "benchmark_results",
    "calibrate",
    "executors",
    "plots",
    "report_html",
    "site_transfer",
    "transfer",
]
