# Convenience targets; the scripts are the source of truth.
.PHONY: demo test
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
