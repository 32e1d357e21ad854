"""The report wing: everything made from records.

``tables`` (records to tidy and wide tables, seed statistics), ``figures``, ``ranking``
(the ranked table), ``site`` (the static web leaderboard), ``compare`` (paired comparisons
with intervals), ``summary`` (the table a run prints) and ``leaderboard`` (writes them all).
Units, arrows and metric specs come from `uqbench.metrics.table`.
"""
