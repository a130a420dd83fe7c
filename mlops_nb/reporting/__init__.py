"""The pages people read: a run's report, the runs dashboard and what changed between two runs, from Jinja templates."""
