"""Analysis of the results table, never of a cluster: statistics, the regression verdict, and what renders them.

- `stats`: pure aggregates, confidence intervals and efficiency over observation rows;
- `regression`: the nightly verdict against a baseline of earlier runs;
- `plots`, `tables`, `pages`, `report`: matplotlib figures, rich tables, HTML pages and reports.
"""
