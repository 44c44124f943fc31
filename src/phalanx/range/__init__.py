"""The range: scenarios, studies, runs, metrics and reports."""
