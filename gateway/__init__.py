"""The one accounted path every model call takes: scope, quota, the call, the ledger."""
