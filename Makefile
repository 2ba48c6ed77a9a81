.PHONY: serve test check bench

# Install everything and start the server (embedded model unless TEXT_MODEL__BASE_URL is set).
serve:
	scripts/serve

# Install everything, lint (ruff, mypy), and run all tests: exactly what CI runs.
test:
	scripts/test

check: test

# Benchmark against LiteLLM and direct calls; results in bench/results/.
bench:
	scripts/bench
