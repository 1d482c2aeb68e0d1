"""Microsoft.Insights: autoscale settings and the activity log (and, beside them, metrics)."""
