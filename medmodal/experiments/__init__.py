"""Experiments: runs of the lower layers composed into studies (calibration, benchmark grids,
transfer, site transfer). Nothing below imports this package."""
