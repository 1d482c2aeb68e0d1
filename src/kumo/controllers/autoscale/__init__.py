"""Autoscale: Azure's decision rules (`engine`), the background evaluator that acts on them
(`evaluator`) and webhook notifications (`webhooks`). See docs/autoscale.md."""
